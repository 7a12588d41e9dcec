#pragma once
// MR signal equations: what a voxel of given T1, T2 and proton density looks like in the four
// BraTS sequences. Pure functions of physics; the generator mixes them by tissue fraction.
#include <array>

namespace kdseg::synth {

class Rng;

// Relaxation times (ms) and proton density (relative to water = 1).
struct TissueMR {
  double t1_ms = 1000;
  double t2_ms = 100;
  double pd = 0.9;
};

// Normal tissue at 1.5 T, the values of the BrainWeb simulator (Collins et al., "Design and
// construction of a realistic digital brain phantom", IEEE TMI 17(3), 1998; Kwan, Evans & Pike,
// IEEE TMI 18(11), 1999; brainweb.bic.mni.mcgill.ca): CSF T1 2569 / T2 329 / PD 1.0,
// GM 833 / 83 / 0.86, WM 500 / 70 / 0.77.
constexpr TissueMR kCsfMR{2569, 329, 1.0};
constexpr TissueMR kGmMR{833, 83, 0.86};
constexpr TissueMR kWmMR{500, 70, 0.77};
// Gadolinium T1 relaxivity at 1.5 T (gadopentetate/gadoterate in plasma, ~4-4.5 /s/mM).
constexpr double kGdRelaxivity = 4.3;  // s^-1 mM^-1

// Spoiled gradient echo (FLASH/SPGR), steady state: T1-weighted at short TR and large flip.
//   S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2),  E1 = exp(-TR/T1)
// (T2* is approximated by T2: at TE of a few ms the factor is close to 1 for every tissue).
double spgr_signal(const TissueMR& t, double tr_ms, double te_ms, double flip_deg);
// Spin echo, TE << TR: S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
double spin_echo_signal(const TissueMR& t, double tr_ms, double te_ms);
// Inversion recovery (FLAIR), magnitude: S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)
double inversion_recovery_signal(const TissueMR& t, double tr_ms, double te_ms, double ti_ms);
// The inversion time that nulls a tissue of relaxation time T1 at repetition time TR.
double null_inversion_time(double t1_ms, double tr_ms);
// T1 shortened by a gadolinium concentration (mM): 1/T1 = 1/T1_0 + r1 C.
double t1_with_gadolinium(double t1_ms, double conc_mM, double r1 = kGdRelaxivity);

// The four BraTS modalities, in kdseg's channel order.
enum Modality : int { kT1 = 0, kT1ce = 1, kT2 = 2, kFlair = 3, kNumModalities = 4 };

// Sequence parameters of one case's scan (randomised per case: protocols differ between sites).
struct Sequences {
  double t1_tr = 20, t1_te = 4, t1_flip = 30;               // ms, ms, degrees: SPGR, e.g. 20/4/30
  double t1ce_tr = 20, t1ce_te = 4, t1ce_flip = 30;         // T1 after contrast, same family
  double t2_tr = 4000, t2_te = 100;                         // spin echo, e.g. 4000/100
  double flair_tr = 9000, flair_te = 120, flair_ti = 2500;  // IR, TI near the CSF null
};
Sequences random_sequences(Rng& rng);

// Signal of tissue `t` in modality `m`; `gd_mM` only acts on T1ce (contrast arrives after the
// pre-contrast T1 was taken).
double mr_signal(Modality m, const Sequences& s, const TissueMR& t, double gd_mM = 0);

}  // namespace kdseg::synth
