/* The fast decoder's search (pattern.py PatternSystem._search up to the rows' norms) in one call: see native.py,
 * which builds this file on first use and keeps the tensor program (base.py row_divisor, extremes.py, ranks.py,
 * pattern.py _best, families.py Family.index) as its reference: tests/test_native.py compares the two bit for bit.
 *
 * For each float32 row z of a [rows, n] batch (rows ld floats apart):
 *   scale  = max |z| (NaN when the row holds a NaN), and from it what base.py's row_divisor gives: the divisor d
 *            (the scale when it is finite, positive and outside [2^-40, 2^40], else 1) and the flags ok (finite,
 *            positive) and finite (the rule is written twice: the tests keep the two equal);
 *   x      = z / d (d == 1 for nearly every row: z is read as it is);
 *   top    = the n_top largest coordinates of x, by value descending, equal values (-0.0 == 0.0) to the lower
 *            coordinate; bottom = the n_bottom smallest, ascending, the same tie rule;
 *   then the rank table: top, then per block (p, q) the first q of bottom that are not among the first p of top,
 *   then (drop_col >= 0) that coordinate with value 0; coords [rows, K] and values x[coords] [rows, K];
 *   then (n_var > 0) the best search variant's system index and score (lsc_decode, below).
 * Only finite rows have a defined answer; any other row gets coordinates in [0, n) (the decoder overwrites it).
 *
 * How, with AVX2 (else the same with portable 4-wide vectors): one pass keeps the largest and smallest value of
 * 16 lanes (every 16th coordinate); the k-th largest of the lane maxima is at most the row's k-th largest value, so
 * a second pass only has to look at coordinates at or above it (compares and a mask test per 8 or 16 values),
 * usually just the answer and a few more, and merges them into the lists in coordinate order (which is what gives
 * the tie rule).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LSC_X86 1
#endif

#define LSC_MAX 32 /* most coordinates a list holds (native.py checks) */
#define LANES 16

typedef struct {
  float v[LSC_MAX];
  int64_t i[LSC_MAX];
  int n;
} List;

static void list_init(List* l, int n, float worst) {
  l->n = n;
  for (int j = 0; j < n; ++j) {
    l->v[j] = worst;
    l->i[j] = j; /* a row that never beats the placeholders still gets coordinates in range */
  }
}

/* Coordinates arrive in increasing order, so a strict comparison keeps the earlier of two equal values first. */
static inline void push_top(List* l, float v, int64_t c) {
  int j = l->n - 1;
  if (j < 0 || !(v > l->v[j])) return;
  while (j > 0 && v > l->v[j - 1]) {
    l->v[j] = l->v[j - 1];
    l->i[j] = l->i[j - 1];
    --j;
  }
  l->v[j] = v;
  l->i[j] = c;
}

static inline void push_bottom(List* l, float v, int64_t c) {
  int j = l->n - 1;
  if (j < 0 || !(v < l->v[j])) return;
  while (j > 0 && v < l->v[j - 1]) {
    l->v[j] = l->v[j - 1];
    l->i[j] = l->i[j - 1];
    --j;
  }
  l->v[j] = v;
  l->i[j] = c;
}

/* Coordinates from..n-1 of x into the lists, those at or beyond the bounds hi (top) and lo (bottom) only. */
static void merge_row(const float* x, int64_t from, int64_t n, float hi, float lo, List* top, List* bot) {
  for (int64_t c = from; c < n; ++c) {
    if (x[c] >= hi) push_top(top, x[c], c);
    if (x[c] <= lo) push_bottom(bot, x[c], c);
  }
}

/* ------------------------------------------------------------------------------------------------ plain C */
/* Portable 4-wide vectors (GCC and clang vector extensions: SSE on x86, NEON on Arm), four of them for the 16 lanes. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
#define QUADS (LANES / 4)

static inline v4f load4(const float* p) {
  v4f v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline v4f pick(v4i m, v4f a, v4f b) { return (v4f)(((v4i)a & m) | ((v4i)b & ~m)); } /* m ? a : b */

static inline int any4(v4i m) { return (m[0] | m[1] | m[2] | m[3]) != 0; }

static inline unsigned bits4(v4i m) { return (unsigned)((m[0] & 1) | (m[1] & 2) | (m[2] & 4) | (m[3] & 8)); }

/* Coordinates v.. v+15 whose bits are set in `above` (`below`) into the top (bottom) list, in order. */
static inline void merge_bits(const float* x, int64_t v, unsigned above, unsigned below, List* top, List* bot) {
  for (; above; above &= above - 1) {
    int j = __builtin_ctz(above);
    push_top(top, x[v + j], v + j);
  }
  for (; below; below &= below - 1) {
    int j = __builtin_ctz(below);
    push_bottom(bot, x[v + j], v + j);
  }
}

/* The k-th largest of the 16 values of q (knocked out in place), counting repeats, NaN skipped; -inf (no bound)
 * when fewer than k remain. */
static float kth_largest(v4f* q, int k) {
  const v4f ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  for (;;) {
    float m = -INFINITY;
    for (int i = 0; i < QUADS; ++i)
      for (int j = 0; j < 4; ++j) m = q[i][j] > m ? q[i][j] : m;
    if (m == -INFINITY) return m;
    const v4f mv = {m, m, m, m};
    int count = 0;
    for (int i = 0; i < QUADS; ++i) {
      v4i eq = q[i] == mv;
      count -= eq[0] + eq[1] + eq[2] + eq[3];
      q[i] = pick(eq, ninf, q[i]);
    }
    if (count >= k) return m;
    k -= count;
  }
}

/* The row's largest magnitude (NaN with a NaN) and its lists. */
static float row_plain(const float* x, int64_t n, List* top, List* bot) {
  float big = -INFINITY;
  int any_nan = 0;
  if (n < LANES || top->n > LANES || bot->n > LANES) { /* no lane bounds: every coordinate merged */
    for (int64_t c = 0; c < n; ++c) big = fmaxf(big, fabsf(x[c])), any_nan |= x[c] != x[c];
    merge_row(x, 0, n, top->n ? -INFINITY : INFINITY, bot->n ? INFINITY : -INFINITY, top, bot);
    return any_nan ? NAN : big;
  }
  v4f mx[QUADS], neg[QUADS];
  v4i nan = {0, 0, 0, 0};
  for (int i = 0; i < QUADS; ++i) {
    mx[i] = neg[i] = load4(x + 4 * i);
    nan |= mx[i] != mx[i];
  }
  int64_t c = LANES;
  for (; c + LANES <= n; c += LANES)
    for (int i = 0; i < QUADS; ++i) {
      v4f a = load4(x + c + 4 * i);
      mx[i] = pick(a > mx[i], a, mx[i]); /* a NaN in a is skipped, caught by nan */
      neg[i] = pick(a < neg[i], a, neg[i]);
      nan |= a != a;
    }
  for (int64_t t = c; t < n; ++t) big = fmaxf(big, fabsf(x[t])), any_nan |= x[t] != x[t];
  for (int i = 0; i < QUADS; ++i) {
    neg[i] = -neg[i]; /* the lane minima, negated: their k-th largest is minus the k-th smallest */
    for (int j = 0; j < 4; ++j) big = fmaxf(big, fmaxf(mx[i][j], neg[i][j]));
  }
  any_nan |= any4(nan);
  const float hi = top->n ? kth_largest(mx, top->n) : INFINITY;
  const float lo = bot->n ? -kth_largest(neg, bot->n) : -INFINITY;
  const v4f vhi = {hi, hi, hi, hi}, vlo = {lo, lo, lo, lo};
  int64_t v = 0;
  for (; v + LANES <= n; v += LANES) {
    v4i above[QUADS], below[QUADS], hit = {0, 0, 0, 0};
    for (int i = 0; i < QUADS; ++i) {
      v4f a = load4(x + v + 4 * i);
      above[i] = a >= vhi;
      below[i] = a <= vlo;
      hit |= above[i] | below[i];
    }
    if (!any4(hit)) continue;
    unsigned up = 0, down = 0;
    for (int i = 0; i < QUADS; ++i) up |= bits4(above[i]) << 4 * i, down |= bits4(below[i]) << 4 * i;
    merge_bits(x, v, up, down, top, bot);
  }
  merge_row(x, v, n, hi, lo, top, bot);
  return any_nan ? NAN : big;
}

/* -------------------------------------------------------------------------------------------------- AVX2 */
#ifdef LSC_X86
#define AVX2 __attribute__((target("avx2,popcnt")))

AVX2 static inline __m256 hmax(__m256 a) { /* the largest lane, in every lane */
  a = _mm256_max_ps(a, _mm256_permute2f128_ps(a, a, 1));
  a = _mm256_max_ps(a, _mm256_shuffle_ps(a, a, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm256_max_ps(a, _mm256_shuffle_ps(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* The k-th largest of the 16 values of (a, b), counting repeats; -inf (no bound) if a NaN gets in the way. */
AVX2 static float kth_largest16(__m256 a, __m256 b, int k) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (;;) {
    __m256 m = hmax(_mm256_max_ps(a, b));
    __m256 ea = _mm256_cmp_ps(a, m, _CMP_EQ_OQ), eb = _mm256_cmp_ps(b, m, _CMP_EQ_OQ);
    int count = __builtin_popcount((unsigned)_mm256_movemask_ps(ea)) +
                __builtin_popcount((unsigned)_mm256_movemask_ps(eb));
    if (count == 0) return -INFINITY;
    if (count >= k) return _mm256_cvtss_f32(m);
    k -= count;
    a = _mm256_blendv_ps(a, ninf, ea);
    b = _mm256_blendv_ps(b, ninf, eb);
  }
}

AVX2 static float row_avx2(const float* x, int64_t n, List* top, List* bot) {
  if (n < LANES || top->n > LANES || bot->n > LANES) return row_plain(x, n, top, bot);
  __m256 mx0 = _mm256_loadu_ps(x), mx1 = _mm256_loadu_ps(x + 8), mn0 = mx0, mn1 = mx1;
  __m256 nan = _mm256_or_ps(_mm256_cmp_ps(mx0, mx0, _CMP_UNORD_Q), _mm256_cmp_ps(mx1, mx1, _CMP_UNORD_Q));
  int64_t c = LANES;
  for (; c + LANES <= n; c += LANES) {
    __m256 a = _mm256_loadu_ps(x + c), b = _mm256_loadu_ps(x + c + 8);
    mx0 = _mm256_max_ps(a, mx0); /* max_ps(a, m) is a > m ? a : m: a NaN in a is skipped, caught by nan */
    mx1 = _mm256_max_ps(b, mx1);
    mn0 = _mm256_min_ps(a, mn0);
    mn1 = _mm256_min_ps(b, mn1);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
  }
  float big = -INFINITY;
  int any_nan = _mm256_movemask_ps(nan) != 0;
  for (int64_t t = c; t < n; ++t) big = fmaxf(big, fabsf(x[t])), any_nan |= x[t] != x[t];
  const __m256 zero = _mm256_setzero_ps();
  __m256 neg0 = _mm256_sub_ps(zero, mn0), neg1 = _mm256_sub_ps(zero, mn1);
  big = fmaxf(big, _mm256_cvtss_f32(hmax(_mm256_max_ps(_mm256_max_ps(mx0, mx1), _mm256_max_ps(neg0, neg1)))));
  const float hi = top->n ? kth_largest16(mx0, mx1, top->n) : INFINITY;
  const float lo = bot->n ? -kth_largest16(neg0, neg1, bot->n) : -INFINITY;
  const __m256 vhi = _mm256_set1_ps(hi), vlo = _mm256_set1_ps(lo);
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    __m256 a = _mm256_loadu_ps(x + v);
    __m256 above = _mm256_cmp_ps(a, vhi, _CMP_GE_OQ), below = _mm256_cmp_ps(a, vlo, _CMP_LE_OQ);
    if (!_mm256_movemask_ps(_mm256_or_ps(above, below))) continue;
    merge_bits(x, v, (unsigned)_mm256_movemask_ps(above), (unsigned)_mm256_movemask_ps(below), top, bot);
  }
  merge_row(x, v, n, hi, lo, top, bot);
  return any_nan ? NAN : big;
}
#endif

/* ---------------------------------------------------------------------------------------------- scoring */
#define MAX_FAMILIES 8
#define MAX_GROUPS 8
#define MAX_COLS 64

typedef struct {
  int n;                       /* families */
  int64_t offset[MAX_FAMILIES]; /* first system index of each */
  int groups[MAX_FAMILIES];
  int k[MAX_FAMILIES][MAX_GROUPS]; /* equal values in each group (1 or 2) */
  uint64_t stride[MAX_FAMILIES][MAX_GROUPS];
} Families;

/* `spec`: n, then per family: offset, groups, then (k, stride) per group (native.py writes it). */
static int read_families(const int64_t* spec, Families* f) {
  f->n = (int)*spec++;
  if (f->n < 0 || f->n > MAX_FAMILIES) return 1;
  for (int i = 0; i < f->n; ++i) {
    f->offset[i] = *spec++;
    f->groups[i] = (int)*spec++;
    if (f->groups[i] < 0 || f->groups[i] > MAX_GROUPS) return 1;
    for (int g = 0; g < f->groups[i]; ++g) {
      f->k[i][g] = (int)*spec++;
      f->stride[i][g] = (uint64_t)*spec++;
      if (f->k[i][g] != 1 && f->k[i][g] != 2) return 1;
    }
  }
  return 0;
}

/* families.py Family.index + the family's offset: mixed radix over the groups, each group's subset ranked in the
 * combinatorial number system among the coordinates the earlier groups left free (unsigned: wraps like int64). */
static int64_t family_index(const Families* f, int fam, const int64_t* pos) {
  uint64_t idx = 0;
  int start = 0;
  for (int g = 0; g < f->groups[fam]; ++g) {
    uint64_t r;
    if (f->k[fam][g] == 1) {
      int64_t c = pos[start], rank = c;
      for (int o = 0; o < start; ++o) rank -= pos[o] < c;
      r = (uint64_t)rank;
    } else {
      int64_t lo = pos[start] < pos[start + 1] ? pos[start] : pos[start + 1];
      int64_t hi = pos[start] < pos[start + 1] ? pos[start + 1] : pos[start];
      int64_t rlo = lo, rhi = hi;
      for (int o = 0; o < start; ++o) rlo -= pos[o] < lo, rhi -= pos[o] < hi;
      r = (((uint64_t)rhi * (uint64_t)(rhi - 1)) >> 1) + (uint64_t)rlo;
    }
    idx += r * f->stride[fam][g];
    start += f->k[fam][g];
  }
  return (int64_t)(idx + (uint64_t)f->offset[fam]);
}

/* ------------------------------------------------------------------------------------------------- entry */
typedef float (*row_fn)(const float*, int64_t, List*, List*);

int lsc_plain_only = 0; /* native.portable_rows(): the portable rows even on a CPU with AVX2 (tests, benchmarks) */

/* See the top of the file: writes each row's divisor, ok (finite and not zero) and finite flags, as base.py
 * row_divisor gives them from the scale, and the rank table; with n_var > 0 also pattern.py PatternSystem._best
 * from the rank table: every search variant v scored as (sum over slots s, in order, of values[dot_cols[s][v]] *
 * vals[s][v]) / norms[v], in float32 with no fused multiply-add, the first maximum taken (a NaN counts as the
 * largest, like argmax), and its system index (family_index of coords[pos_cols[v][s]]) and score written.
 * `scratch` holds n floats. Returns 0, or 1 for a specification out of range. */
int lsc_decode(const float* z, int64_t rows, int64_t n, int64_t ld, int n_top, int n_bottom, int n_blocks,
               const int64_t* block_p, const int64_t* block_q, int64_t drop_col, int n_var, int n_slots,
               const int64_t* dot_cols, const float* vals, const float* norms, const int64_t* pos_cols,
               const int64_t* family, const int64_t* family_spec, float* scratch, float* divisor, uint8_t* ok,
               uint8_t* finite, int64_t* coords, float* values, int64_t* index, float* score) {
  row_fn row = row_plain;
#ifdef LSC_X86
  if (!lsc_plain_only && __builtin_cpu_supports("avx2")) row = row_avx2;
#endif
  Families fams;
  if (n_top > LSC_MAX || n_bottom > LSC_MAX || n_top < 0 || n_bottom < 0 || n_top > n || n_bottom > n) return 1;
  if (n_var > 0 && (n_slots > MAX_COLS || read_families(family_spec, &fams))) return 1;
  int64_t k = n_top + (drop_col >= 0);
  for (int b = 0; b < n_blocks; ++b) k += block_q[b];
  if (k > MAX_COLS) return 1;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = z + r * ld;
    List top, bot;
    list_init(&top, n_top, -INFINITY);
    list_init(&bot, n_bottom, INFINITY);
    float s = row(x, n, &top, &bot), d = 1.0f;
    if (isfinite(s) && s > 0 && (s < 0x1p-40f || s > 0x1p40f)) { /* base.py row_divisor: not 1 */
      d = s;
      for (int64_t c = 0; c < n; ++c) scratch[c] = x[c] / d;
      x = scratch;
      list_init(&top, n_top, -INFINITY);
      list_init(&bot, n_bottom, INFINITY);
      row(x, n, &top, &bot);
    }
    divisor[r] = d;
    finite[r] = isfinite(s) != 0;
    ok[r] = isfinite(s) && s > 0;
    int64_t* out = coords + r * k;
    float* val = values + r * k;
    int col = 0;
    for (int j = 0; j < n_top; ++j) out[col++] = top.i[j];
    for (int b = 0; b < n_blocks; ++b) {
      int64_t want = block_q[b], got = 0;
      for (int j = 0; j < n_bottom && got < want; ++j) {
        int taken = 0;
        for (int t = 0; t < block_p[b]; ++t) taken |= bot.i[j] == top.i[t];
        if (!taken) out[col + got++] = bot.i[j];
      }
      for (; got < want; ++got) out[col + got] = n_bottom ? bot.i[n_bottom - 1] : 0; /* cannot happen: plan */
      col += want;
    }
    for (int j = 0; j < col; ++j) val[j] = x[out[j]];
    if (drop_col >= 0) {
      out[col] = drop_col;
      val[col] = 0.0f;
    }
    if (n_var <= 0) continue;
    int best = 0;
    float best_score = 0.0f;
    for (int v = 0; v < n_var; ++v) {
      float dot = val[dot_cols[v]] * vals[v];
      for (int t = 1; t < n_slots; ++t) dot = dot + val[dot_cols[t * n_var + v]] * vals[t * n_var + v];
      float sc = dot / norms[v];
      if (v == 0 || sc > best_score || (isnan(sc) && !isnan(best_score))) best = v, best_score = sc;
    }
    int64_t pos[MAX_COLS];
    for (int t = 0; t < n_slots; ++t) pos[t] = out[pos_cols[best * n_slots + t]];
    index[r] = family_index(&fams, (int)family[best], pos);
    score[r] = best_score;
  }
  return 0;
}
