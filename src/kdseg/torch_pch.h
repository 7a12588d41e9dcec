// Precompiled header of every LibTorch translation unit (CMake target_precompile_headers): keeps a
// clean build to a few minutes on 2 cores. Headers that include LibTorch stay out of kdseg's own
// headers where they can (docs/design.md §7 "Light headers"); .cpp files include <torch/torch.h> as
// usual and get it free.
#pragma once
#include <torch/torch.h>
