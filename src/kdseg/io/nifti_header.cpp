#include "kdseg/io/nifti_header.h"

#include <cmath>

namespace kdseg {

int bytes_per_voxel(int32_t datatype) {
  switch (datatype) {
    case kNiftiUInt8:
    case kNiftiInt8:
      return 1;
    case kNiftiInt16:
    case kNiftiUInt16:
      return 2;
    case kNiftiInt32:
    case kNiftiUInt32:
    case kNiftiFloat32:
      return 4;
    case kNiftiFloat64:
      return 8;
    default:
      return 0;
  }
}

const char* datatype_name(int32_t datatype) {
  switch (datatype) {
    case kNiftiUInt8:
      return "uint8";
    case kNiftiInt8:
      return "int8";
    case kNiftiInt16:
      return "int16";
    case kNiftiUInt16:
      return "uint16";
    case kNiftiInt32:
      return "int32";
    case kNiftiUInt32:
      return "uint32";
    case kNiftiFloat32:
      return "float32";
    case kNiftiFloat64:
      return "float64";
    case 1:
      return "binary";
    case 32:
      return "complex64";
    case 128:
      return "rgb24";
    case 1024:
      return "int64";
    case 1280:
      return "uint64";
    case 1536:
      return "float128";
    case 1792:
      return "complex128";
    case 2048:
      return "complex256";
    case 2304:
      return "rgba32";
    default:
      return "unknown";
  }
}

Mat44 qform_matrix(const NiftiHeader& h) {
  // Rotation from the unit quaternion (a, b, c, d); a is implied by b, c, d.
  double b = h.quatern_b, c = h.quatern_c, d = h.quatern_d;
  double aa = 1.0 - (b * b + c * c + d * d);
  double a;
  if (aa < 1e-7) {  // b,c,d describe a 180-degree rotation: renormalise them, a = 0
    double n = std::sqrt(b * b + c * c + d * d);
    if (n > 0) b /= n, c /= n, d /= n;
    a = 0;
  } else {
    a = std::sqrt(aa);
  }
  const double r[3][3] = {
      {a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
  const double qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
  const double sx = h.pixdim[1] > 0 ? h.pixdim[1] : 1.0;
  const double sy = h.pixdim[2] > 0 ? h.pixdim[2] : 1.0;
  const double sz = (h.pixdim[3] > 0 ? h.pixdim[3] : 1.0) * qfac;
  Mat44 m{};
  for (int i = 0; i < 3; ++i) {
    m[i][0] = r[i][0] * sx;
    m[i][1] = r[i][1] * sy;
    m[i][2] = r[i][2] * sz;
  }
  m[0][3] = h.qoffset_x;
  m[1][3] = h.qoffset_y;
  m[2][3] = h.qoffset_z;
  m[3] = {0, 0, 0, 1};
  return m;
}

Mat44 sform_matrix(const NiftiHeader& h) {
  Mat44 m{};
  for (int i = 0; i < 3; ++i) m[i] = h.srow[i];
  m[3] = {0, 0, 0, 1};
  return m;
}

Mat44 affine(const NiftiHeader& h) {
  if (h.sform_code > 0) return sform_matrix(h);
  if (h.qform_code > 0) return qform_matrix(h);
  Mat44 m{};
  for (int i = 0; i < 3; ++i) m[i][i] = h.pixdim[i + 1] > 0 ? h.pixdim[i + 1] : 1.0;
  m[3][3] = 1;
  return m;
}

std::array<double, 3> affine_spacing(const Mat44& m) {
  std::array<double, 3> s{};
  for (int j = 0; j < 3; ++j)
    s[j] = std::sqrt(m[0][j] * m[0][j] + m[1][j] * m[1][j] + m[2][j] * m[2][j]);
  return s;
}

void set_affine(NiftiHeader& h, const Mat44& m, int32_t code) {
  for (int i = 0; i < 3; ++i) h.srow[i] = m[i];
  h.sform_code = code;
  h.qform_code = code;
  // Column lengths are the voxel sizes; the normalised columns the rotation.
  double col[3][3];
  double len[3];
  for (int j = 0; j < 3; ++j) {
    len[j] = std::sqrt(m[0][j] * m[0][j] + m[1][j] * m[1][j] + m[2][j] * m[2][j]);
    if (len[j] == 0) len[j] = 1;
    for (int i = 0; i < 3; ++i) col[j][i] = m[i][j] / len[j];
  }
  // Orthogonalise (Gram-Schmidt keeps the first column's direction); a left-handed matrix is
  // stored as qfac = -1 with the third column negated, as the NIfTI standard prescribes.
  auto dot = [](const double* u, const double* v) {
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
  };
  auto normalise = [](double* u) {
    double n = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    if (n > 0) u[0] /= n, u[1] /= n, u[2] /= n;
  };
  for (int j = 1; j < 3; ++j) {
    for (int k = 0; k < j; ++k) {
      double p = dot(col[j], col[k]);
      for (int i = 0; i < 3; ++i) col[j][i] -= p * col[k][i];
    }
    normalise(col[j]);
  }
  double det = col[0][0] * (col[1][1] * col[2][2] - col[2][1] * col[1][2]) -
               col[1][0] * (col[0][1] * col[2][2] - col[2][1] * col[0][2]) +
               col[2][0] * (col[0][1] * col[1][2] - col[1][1] * col[0][2]);
  double qfac = 1;
  if (det < 0) {
    qfac = -1;
    for (int i = 0; i < 3; ++i) col[2][i] = -col[2][i];
  }
  // Rotation matrix r[i][j] = col[j][i]; quaternion by the largest-diagonal method.
  double r00 = col[0][0], r11 = col[1][1], r22 = col[2][2];
  double r01 = col[1][0], r02 = col[2][0], r10 = col[0][1], r12 = col[2][1], r20 = col[0][2],
         r21 = col[1][2];
  double a, b, c, d;
  double tr = r00 + r11 + r22 + 1.0;
  if (tr > 0.5) {
    a = 0.5 * std::sqrt(tr);
    b = 0.25 * (r21 - r12) / a;
    c = 0.25 * (r02 - r20) / a;
    d = 0.25 * (r10 - r01) / a;
  } else {
    double xd = 1.0 + r00 - (r11 + r22), yd = 1.0 + r11 - (r00 + r22), zd = 1.0 + r22 - (r00 + r11);
    if (xd > 1.0) {
      b = 0.5 * std::sqrt(xd);
      c = 0.25 * (r01 + r10) / b;
      d = 0.25 * (r02 + r20) / b;
      a = 0.25 * (r21 - r12) / b;
    } else if (yd > 1.0) {
      c = 0.5 * std::sqrt(yd);
      b = 0.25 * (r01 + r10) / c;
      d = 0.25 * (r12 + r21) / c;
      a = 0.25 * (r02 - r20) / c;
    } else {
      d = 0.5 * std::sqrt(zd);
      b = 0.25 * (r02 + r20) / d;
      c = 0.25 * (r12 + r21) / d;
      a = 0.25 * (r10 - r01) / d;
    }
    if (a < 0) b = -b, c = -c, d = -d;  // the header stores the quaternion with a >= 0
  }
  h.quatern_b = b;
  h.quatern_c = c;
  h.quatern_d = d;
  h.qoffset_x = m[0][3];
  h.qoffset_y = m[1][3];
  h.qoffset_z = m[2][3];
  h.pixdim[0] = qfac;
  for (int j = 0; j < 3; ++j) h.pixdim[j + 1] = len[j];
}

NiftiHeader make_header(const std::array<int64_t, 3>& dim, const Mat44& m, int64_t n_channels,
                        int32_t datatype) {
  NiftiHeader h;
  h.dim = {n_channels > 1 ? 4 : 3,          dim[0], dim[1], dim[2],
           n_channels > 1 ? n_channels : 1, 1,      1,      1};
  h.datatype = datatype;
  h.bitpix = 8 * bytes_per_voxel(datatype);
  h.xyzt_units = 2;  // mm
  set_affine(h, m, 1);
  if (n_channels > 1) h.pixdim[4] = 1;
  return h;
}

}  // namespace kdseg
