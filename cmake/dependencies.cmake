# Every third-party dependency, found once. All come from Debian packages (scripts/setup.sh).
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3.9 REQUIRED)
find_package(CLI11 2.1 REQUIRED)

# libdeflate: a fast one-shot inflate (Debian's libdeflate-dev has no CMake package).
find_path(KDSEG_DEFLATE_INCLUDE libdeflate.h REQUIRED)
find_library(KDSEG_DEFLATE_LIBRARY NAMES deflate REQUIRED)
add_library(kdseg::deflate UNKNOWN IMPORTED)
set_target_properties(kdseg::deflate PROPERTIES IMPORTED_LOCATION "${KDSEG_DEFLATE_LIBRARY}"
                      INTERFACE_INCLUDE_DIRECTORIES "${KDSEG_DEFLATE_INCLUDE}")

# jemalloc (Debian: libjemalloc-dev) as the allocator of every kdseg program: linked, it serves
# every malloc of the process, LibTorch's included. kdseg::keep_freed_memory() (util/memory.h)
# configures it. Without it glibc's malloc is used. Not with the sanitizers of the fuzz build.
option(KDSEG_WITH_JEMALLOC "Link jemalloc as the process allocator" ON)
set(KDSEG_HAVE_JEMALLOC OFF)
if(KDSEG_WITH_JEMALLOC AND NOT KDSEG_BUILD_FUZZ)
  find_path(KDSEG_JEMALLOC_INCLUDE jemalloc/jemalloc.h)
  find_library(KDSEG_JEMALLOC_LIBRARY NAMES jemalloc)
  if(KDSEG_JEMALLOC_INCLUDE AND KDSEG_JEMALLOC_LIBRARY)
    set(KDSEG_HAVE_JEMALLOC ON)
    add_library(kdseg::jemalloc UNKNOWN IMPORTED)
    set_target_properties(kdseg::jemalloc PROPERTIES IMPORTED_LOCATION "${KDSEG_JEMALLOC_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${KDSEG_JEMALLOC_INCLUDE}"
                          INTERFACE_COMPILE_DEFINITIONS KDSEG_HAVE_JEMALLOC=1)
  endif()
endif()
message(STATUS "kdseg: jemalloc: ${KDSEG_HAVE_JEMALLOC}")

if(KDSEG_WITH_TORCH)
  # Debian's libtorch-dev 1.13.1, or a pip PyTorch 2.x through
  # CMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)').
  find_package(Torch REQUIRED)
  separate_arguments(KDSEG_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  # pip PyTorch wheels since 2.5 export from libtorch.so / libtorch_cpu.so a statically linked
  # copy of part of libstdc++, std::filesystem among it (pytorch/pytorch#133437). A program that
  # needs libtorch before libstdc++.so.6 has its std::filesystem calls bound to that copy: against
  # torch 2.11 (H200 machine, g++ 13.3) std::filesystem::remove_all jumped to address 0 and every
  # test that wrote files crashed. Needing libstdc++.so.6 first makes the dynamic linker take the
  # system's copy, as it does under Python. Named as a file: a plain -lstdc++ did not come first
  # there (the g++ driver places its own library itself); -l:libstdc++.so.6 did, and the crash went.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_SYSTEM_NAME STREQUAL "Linux")
    add_link_options("SHELL:-Wl,--push-state,--no-as-needed -l:libstdc++.so.6 -Wl,--pop-state")
  endif()
  set(KDSEG_TORCH_DEFINITIONS "")
  # c10d's Gloo backend, when this LibTorch ships its headers and Gloo's are installed (Debian:
  # libgloo-dev). Without them kdseg still builds and reports distributed training as unavailable.
  find_path(KDSEG_C10D_GLOO_HEADER torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
            HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
  find_path(KDSEG_GLOO_INCLUDE gloo/config.h)
  if(KDSEG_C10D_GLOO_HEADER AND KDSEG_GLOO_INCLUDE)
    set(KDSEG_HAVE_GLOO ON)
    list(APPEND KDSEG_TORCH_DEFINITIONS USE_C10D_GLOO KDSEG_HAVE_GLOO=1)
  else()
    set(KDSEG_HAVE_GLOO OFF)
  endif()
  # oneDNN (Debian: libdnnl-dev, the same libdnnl.so.2 Debian's LibTorch runs its convolutions
  # with) for the student's bf16 CPU inference path (src/kdseg/infer/onednn_student.h). Without
  # it kdseg builds and predicts through LibTorch alone. Off against a LibTorch that carries its
  # own oneDNN (pip wheels link a private copy): two copies in one process are not wanted.
  option(KDSEG_WITH_ONEDNN "Use the system oneDNN for the student's bf16 CPU inference" ON)
  set(KDSEG_HAVE_ONEDNN OFF)
  # Found by header and library rather than through dnnl-config.cmake, which Debian's package
  # makes require OpenCL (only recommended by libdnnl-dev, and unused here: CPU only).
  # x86-64 only (its fused passes are AVX-512 code).
  if(KDSEG_WITH_ONEDNN AND Torch_VERSION VERSION_LESS 2 AND
     CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    find_path(KDSEG_DNNL_INCLUDE oneapi/dnnl/dnnl.hpp)
    find_library(KDSEG_DNNL_LIBRARY NAMES dnnl)
    # The student's oneDNN path is written against oneDNN 2.x (operation descriptors), which
    # oneDNN 3 removed. With oneDNN 3 (newer distributions) kdseg builds without that path, says
    # so here, and predicts in bf16 through LibTorch's autocast instead.
    set(KDSEG_DNNL_MAJOR 0)
    if(KDSEG_DNNL_INCLUDE AND EXISTS "${KDSEG_DNNL_INCLUDE}/oneapi/dnnl/dnnl_version.h")
      file(STRINGS "${KDSEG_DNNL_INCLUDE}/oneapi/dnnl/dnnl_version.h" KDSEG_DNNL_MAJOR_LINE
           REGEX "#define DNNL_VERSION_MAJOR ")
      string(REGEX REPLACE ".*DNNL_VERSION_MAJOR ([0-9]+).*" "\\1" KDSEG_DNNL_MAJOR
             "${KDSEG_DNNL_MAJOR_LINE}")
    endif()
    if(KDSEG_DNNL_INCLUDE AND KDSEG_DNNL_LIBRARY AND NOT KDSEG_DNNL_MAJOR EQUAL 2)
      message(WARNING "oneDNN ${KDSEG_DNNL_MAJOR}.x at ${KDSEG_DNNL_INCLUDE}: the student's "
                      "oneDNN bf16 path needs oneDNN 2.x and is left out; bf16 prediction runs "
                      "through LibTorch's autocast")
    elseif(KDSEG_DNNL_INCLUDE AND KDSEG_DNNL_LIBRARY)
      set(KDSEG_HAVE_ONEDNN ON)
      list(APPEND KDSEG_TORCH_DEFINITIONS KDSEG_HAVE_ONEDNN=1)
      add_library(kdseg::dnnl UNKNOWN IMPORTED)
      set_target_properties(kdseg::dnnl PROPERTIES IMPORTED_LOCATION "${KDSEG_DNNL_LIBRARY}"
                            INTERFACE_INCLUDE_DIRECTORIES "${KDSEG_DNNL_INCLUDE}")
    endif()
  endif()
  # The BLAS behind Debian's libblas.so.3 alternative (scripts/setup.sh selects OpenBLAS).
  find_library(KDSEG_SYSTEM_BLAS NAMES libblas.so.3)
  if(KDSEG_SYSTEM_BLAS)
    get_filename_component(KDSEG_BLAS_REAL "${KDSEG_SYSTEM_BLAS}" REALPATH)
    if(NOT KDSEG_BLAS_REAL MATCHES "openblas")
      message(WARNING "libblas.so.3 is ${KDSEG_BLAS_REAL}, not OpenBLAS: LibTorch will be ~4x slower "
                      "(run scripts/setup.sh, or update-alternatives --config libblas.so.3-*)")
    endif()
  endif()
  message(STATUS "kdseg: LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}; Gloo: ${KDSEG_HAVE_GLOO}; "
                 "oneDNN: ${KDSEG_HAVE_ONEDNN}")
endif()
