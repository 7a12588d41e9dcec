#include "kdseg/synth/mr_signal.h"

#include <cmath>

#include "kdseg/synth/rng.h"

namespace kdseg::synth {

double spgr_signal(const TissueMR& t, double tr, double te, double flip_deg) {
  const double a = flip_deg * M_PI / 180.0;
  const double e1 = std::exp(-tr / t.t1_ms);
  return t.pd * std::sin(a) * (1 - e1) / (1 - std::cos(a) * e1) * std::exp(-te / t.t2_ms);
}

double spin_echo_signal(const TissueMR& t, double tr, double te) {
  return t.pd * (1 - std::exp(-tr / t.t1_ms)) * std::exp(-te / t.t2_ms);
}

double inversion_recovery_signal(const TissueMR& t, double tr, double te, double ti) {
  return t.pd * std::abs(1 - 2 * std::exp(-ti / t.t1_ms) + std::exp(-tr / t.t1_ms)) *
         std::exp(-te / t.t2_ms);
}

double null_inversion_time(double t1, double tr) {
  return t1 * std::log(2.0 / (1.0 + std::exp(-tr / t1)));
}

double t1_with_gadolinium(double t1, double c, double r1) {
  return 1.0 / (1.0 / t1 + r1 * c / 1000.0);
}

Sequences random_sequences(Rng& rng) {
  Sequences s;
  s.t1_tr = rng.uniform(10, 25);
  s.t1_te = rng.uniform(2, 6);
  s.t1_flip = rng.uniform(15, 35);
  s.t1ce_tr = rng.uniform(10, 25);
  s.t1ce_te = rng.uniform(2, 6);
  s.t1ce_flip = rng.uniform(15, 35);
  s.t2_tr = rng.uniform(2500, 6000);
  s.t2_te = rng.uniform(80, 120);
  s.flair_tr = rng.uniform(7000, 11000);
  s.flair_te = rng.uniform(90, 140);
  // CSF is nulled imperfectly: real protocols pick one TI for every patient.
  s.flair_ti = null_inversion_time(kCsfMR.t1_ms, s.flair_tr) * rng.uniform(0.93, 1.05);
  return s;
}

double mr_signal(Modality m, const Sequences& s, const TissueMR& t, double gd) {
  switch (m) {
    case kT1:
      return spgr_signal(t, s.t1_tr, s.t1_te, s.t1_flip);
    case kT1ce: {
      TissueMR c = t;
      if (gd > 0) c.t1_ms = t1_with_gadolinium(t.t1_ms, gd);
      return spgr_signal(c, s.t1ce_tr, s.t1ce_te, s.t1ce_flip);
    }
    case kT2:
      return spin_echo_signal(t, s.t2_tr, s.t2_te);
    case kFlair:
      return inversion_recovery_signal(t, s.flair_tr, s.flair_te, s.flair_ti);
    default:
      return 0;
  }
}

}  // namespace kdseg::synth
