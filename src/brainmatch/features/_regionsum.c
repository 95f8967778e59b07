/*
 * Region sums of streamed volumes (brainmatch.features.regions).
 *
 * brainmatch streams a BOLD one volume at a time and needs, for every volume, the
 * float64 sum of the voxels of each atlas region, plus one extra column summing the
 * brain-mask voxels outside the atlas (so that a NaN there shows up).  numpy can only
 * do this as a gather (``take``) and an ``add.reduceat``: two passes and a scattered
 * read of a volume that has already left the CPU cache, about 25% of the time it takes
 * to inflate the .nii.gz.  Here:
 *
 * - volume_run_sums (float32, what fMRIPrep writes): inflates a volume piece by piece
 *   (calling the gzip reader's readinto) and sums each piece's voxels while the piece is
 *   still in the L2 cache.  The voxels are runs of consecutive voxels of one column (x
 *   is fastest in a NIfTI, so a region's voxels on one line of x form a run); each run
 *   is summed without a loop over its voxels (see sum_runs);
 * - region_sums (any other numeric type): adds each voxel into its column.
 *
 * Only the CPython API is used (arrays come in through the buffer protocol); brainmatch
 * falls back to its numpy path, with the same numbers, when this is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Interleaved sets of accumulators, used in turn: neighbouring voxels (and consecutive
 * runs) mostly belong to the same region, and a single accumulator per column would
 * make every add wait for the previous one. */
#define BANKS 4

/* ---------------------------------------------------------------------------------- */
/* region_sums: any numeric type, one voxel at a time                                 */

#define VOXEL_LOOP(T)                                                                 \
    do {                                                                              \
        const T *x = (const T *)data;                                                 \
        Py_ssize_t i = v_lo;                                                          \
        for (; i + BANKS <= v_hi; i += BANKS) {                                       \
            acc[col[i]] += (double)x[addr[i]];                                        \
            acc[n_cols + col[i + 1]] += (double)x[addr[i + 1]];                       \
            acc[2 * n_cols + col[i + 2]] += (double)x[addr[i + 2]];                   \
            acc[3 * n_cols + col[i + 3]] += (double)x[addr[i + 3]];                   \
        }                                                                             \
        for (; i < v_hi; i++) {                                                       \
            acc[col[i]] += (double)x[addr[i]];                                        \
        }                                                                             \
    } while (0)

static PyObject *
region_sums(PyObject *self, PyObject *args)
{
    Py_buffer volume, voxels, columns, result;
    int code;
    Py_ssize_t v_lo, v_hi;
    if (!PyArg_ParseTuple(args, "y*Cy*y*nnw*", &volume, &code, &voxels, &columns, &v_lo,
                          &v_hi, &result)) {
        return NULL;
    }
    PyObject *ret = NULL;
    double *acc = NULL;
    Py_ssize_t item = 0;
    switch (code) {
    case 'f': item = sizeof(float); break;
    case 'd': item = sizeof(double); break;
    case 'h': case 'H': item = 2; break;
    case 'i': case 'I': item = 4; break;
    case 'b': case 'B': item = 1; break;
    default:
        PyErr_Format(PyExc_ValueError, "region_sums: unsupported item type code %c", code);
        goto done;
    }
    const Py_ssize_t n_voxels = volume.len / item;
    const Py_ssize_t n = voxels.len / (Py_ssize_t)sizeof(int32_t);
    const Py_ssize_t n_cols = result.len / (Py_ssize_t)sizeof(double);
    if (columns.len != n * (Py_ssize_t)sizeof(uint16_t) || v_lo < 0 || v_hi < v_lo
        || v_hi > n) {
        PyErr_SetString(PyExc_ValueError, "region_sums: voxel arrays or range do not match");
        goto done;
    }
    const int32_t *addr = (const int32_t *)voxels.buf;
    const uint16_t *col = (const uint16_t *)columns.buf;
    int bad = 0;
    for (Py_ssize_t i = v_lo; i < v_hi; i++) {
        bad |= (addr[i] < 0) | (addr[i] >= n_voxels) | (col[i] >= n_cols);
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "region_sums: a voxel or column is out of range");
        goto done;
    }
    acc = PyMem_Calloc((size_t)(BANKS * n_cols) + 1, sizeof(double));
    if (acc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const void *data = volume.buf;
    double *out = (double *)result.buf;
    Py_BEGIN_ALLOW_THREADS
    switch (code) {
    case 'f': VOXEL_LOOP(float); break;
    case 'd': VOXEL_LOOP(double); break;
    case 'h': VOXEL_LOOP(int16_t); break;
    case 'H': VOXEL_LOOP(uint16_t); break;
    case 'i': VOXEL_LOOP(int32_t); break;
    case 'I': VOXEL_LOOP(uint32_t); break;
    case 'b': VOXEL_LOOP(int8_t); break;
    case 'B': VOXEL_LOOP(uint8_t); break;
    }
    for (Py_ssize_t c = 0; c < n_cols; c++) {
        out[c] += (acc[c] + acc[n_cols + c]) + (acc[2 * n_cols + c] + acc[3 * n_cols + c]);
    }
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    PyMem_Free(acc);
    PyBuffer_Release(&volume);
    PyBuffer_Release(&voxels);
    PyBuffer_Release(&columns);
    PyBuffer_Release(&result);
    return ret;
}

/* ---------------------------------------------------------------------------------- */
/* float32 runs                                                                       */

/* Runs are short (median 4 voxels for a 100-region atlas at 2 mm), so a loop over a
 * run's voxels would mispredict its exit at nearly every run.  Instead each run (at
 * most RUN voxels; longer ones are cut in the plan) is read as RUN consecutive floats,
 * four 4-float vectors; the floats past the run's end are masked to +0 (bitwise, so a
 * NaN there cannot leak in); the vectors are added lane-wise in float32 (each lane adds
 * 4 values, a rounding error of ~1e-7 of the run's sum) and the lanes in double. */
#define RUN 16
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));

static v4i run_mask[RUN + 1][RUN / 4];

static void
init_masks(void)
{
    for (int len = 0; len <= RUN; len++) {
        for (int j = 0; j < RUN; j++) {
            run_mask[len][j / 4][j % 4] = j < len ? -1 : 0;
        }
    }
}

static inline v4f
load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

typedef struct {
    const int32_t *start;
    const uint8_t *len;
    const uint16_t *col;
    Py_ssize_t n_runs;
    Py_ssize_t n_cols;
    Py_ssize_t n_voxels;
} Runs;

/* add runs r_lo..r_hi of x into the banked accumulators acc[BANKS][n_cols + 1].
 * Memory-safe whatever the arrays hold, without a separate validation pass (which
 * would cost a third of the time): a run that does not fit in the volume is clipped,
 * and a column out of range adds into the spare slot n_cols, which is discarded. */
static void
sum_runs(const Runs *R, const float *x, Py_ssize_t r_lo, Py_ssize_t r_hi, v2d *acc)
{
    const Py_ssize_t stride = R->n_cols + 1;
    for (Py_ssize_t r = r_lo; r < r_hi; r++) {
        const int64_t s0 = R->start[r];
        const Py_ssize_t c = R->col[r] < R->n_cols ? R->col[r] : R->n_cols;
        const int len = R->len[r] < RUN ? R->len[r] : RUN;
        v2d *a = acc + (r % BANKS) * stride + c;
        if (s0 >= 0 && s0 + RUN <= R->n_voxels) {
            const float *p = x + s0;
            const v4i *m = run_mask[len];
            v4f a0 = (v4f)((v4i)load4(p) & m[0]);
            v4f a1 = (v4f)((v4i)load4(p + 4) & m[1]);
            v4f a2 = (v4f)((v4i)load4(p + 8) & m[2]);
            v4f a3 = (v4f)((v4i)load4(p + 12) & m[3]);
            v4f s = (a0 + a1) + (a2 + a3);
            v2d lo = {(double)s[0], (double)s[1]};
            v2d hi = {(double)s[2], (double)s[3]};
            *a += lo + hi;
        } else { /* near the end of the volume: do not read past it */
            for (int64_t j = s0 < 0 ? -s0 : 0; j < len && s0 + j < R->n_voxels; j++) {
                (*a)[0] += (double)x[s0 + j];
            }
        }
    }
}

static void
merge(const v2d *acc, Py_ssize_t n_cols, double *out)
{
    for (Py_ssize_t c = 0; c < n_cols; c++) {
        v2d t = acc[c];
        for (int b = 1; b < BANKS; b++) t += acc[b * (n_cols + 1) + c];
        out[c] += t[0] + t[1];
    }
}

static int
parse_runs(Runs *R, Py_buffer *volume, Py_buffer *starts, Py_buffer *lengths,
           Py_buffer *columns, Py_buffer *result)
{
    R->n_voxels = volume->len / (Py_ssize_t)sizeof(float);
    R->n_runs = starts->len / (Py_ssize_t)sizeof(int32_t);
    R->n_cols = result->len / (Py_ssize_t)sizeof(double);
    R->start = (const int32_t *)starts->buf;
    R->len = (const uint8_t *)lengths->buf;
    R->col = (const uint16_t *)columns->buf;
    if (lengths->len != R->n_runs || columns->len != R->n_runs * (Py_ssize_t)sizeof(uint16_t)) {
        PyErr_SetString(PyExc_ValueError, "run arrays have different lengths");
        return 0;
    }
    return 1;
}

static PyObject *
run_sums(PyObject *self, PyObject *args)
{
    Py_buffer volume, starts, lengths, columns, result;
    Py_ssize_t r_lo, r_hi;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nnw*", &volume, &starts, &lengths, &columns, &r_lo,
                          &r_hi, &result)) {
        return NULL;
    }
    PyObject *ret = NULL;
    v2d *acc = NULL;
    Runs R;
    if (!parse_runs(&R, &volume, &starts, &lengths, &columns, &result)) {
        goto done;
    }
    if (r_lo < 0 || r_hi < r_lo || r_hi > R.n_runs) {
        PyErr_SetString(PyExc_ValueError, "run_sums: run range out of bounds");
        goto done;
    }
    acc = PyMem_Calloc((size_t)(BANKS * (R.n_cols + 1)), sizeof(v2d));
    if (acc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    sum_runs(&R, (const float *)volume.buf, r_lo, r_hi, acc);
    merge(acc, R.n_cols, (double *)result.buf);
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    PyMem_Free(acc);
    PyBuffer_Release(&volume);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&columns);
    PyBuffer_Release(&result);
    return ret;
}

static PyObject *
volume_run_sums(PyObject *self, PyObject *args)
{
    PyObject *readinto, *views;
    Py_buffer volume, starts, lengths, columns, bounds, result;
    if (!PyArg_ParseTuple(args, "OO!y*y*y*y*y*w*", &readinto, &PyList_Type, &views, &volume,
                          &starts, &lengths, &columns, &bounds, &result)) {
        return NULL;
    }
    PyObject *ret = NULL;
    v2d *acc = NULL;
    Runs R;
    if (!parse_runs(&R, &volume, &starts, &lengths, &columns, &result)) {
        goto done;
    }
    const Py_ssize_t n_pieces = PyList_GET_SIZE(views);
    const int64_t *b = (const int64_t *)bounds.buf;
    int bad = bounds.len != (n_pieces + 1) * (Py_ssize_t)sizeof(int64_t);
    for (Py_ssize_t c = 0; !bad && c <= n_pieces; c++) {
        bad |= b[c] < 0 || b[c] > R.n_runs || (c > 0 && b[c] < b[c - 1]);
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "volume_run_sums: piece bounds do not match");
        goto done;
    }
    acc = PyMem_Calloc((size_t)(BANKS * (R.n_cols + 1)), sizeof(v2d));
    if (acc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *x = (const float *)volume.buf;
    Py_ssize_t c = 0, got = 0;
    for (; c < n_pieces; c++) {
        PyObject *view = PyList_GET_ITEM(views, c);
        Py_ssize_t want = PyObject_Length(view);
        PyObject *n = PyObject_CallOneArg(readinto, view);
        if (n == NULL) {
            goto done;
        }
        got = PyLong_AsSsize_t(n);
        Py_DECREF(n);
        if (got == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (got != want) {
            break; /* a short read: the caller finishes this volume */
        }
        Py_BEGIN_ALLOW_THREADS
        sum_runs(&R, x, b[c], b[c + 1], acc);
        Py_END_ALLOW_THREADS
    }
    merge(acc, R.n_cols, (double *)result.buf);
    ret = Py_BuildValue("nn", c, c < n_pieces ? got : 0);
done:
    PyMem_Free(acc);
    PyBuffer_Release(&volume);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&columns);
    PyBuffer_Release(&bounds);
    PyBuffer_Release(&result);
    return ret;
}

static PyMethodDef methods[] = {
    {"region_sums", region_sums, METH_VARARGS,
     "region_sums(volume, code, voxels, columns, v_lo, v_hi, out)\n\n"
     "Add volume[voxels[i]] to out[columns[i]] (float64) for i in range(v_lo, v_hi).\n"
     "volume: one volume's values, of the struct type code (f d h H i I b B);\n"
     "voxels: int32 flat indices; columns: uint16."},
    {"run_sums", run_sums, METH_VARARGS,
     "run_sums(volume, starts, lengths, columns, r_lo, r_hi, out)\n\n"
     "float32 volume: add sum(volume[starts[r]:starts[r] + lengths[r]]) to\n"
     "out[columns[r]] (float64) for r in range(r_lo, r_hi).  starts: int32; lengths: uint8\n"
     "(at most 16); columns: uint16."},
    {"volume_run_sums", volume_run_sums, METH_VARARGS,
     "volume_run_sums(readinto, views, volume, starts, lengths, columns, bounds, out)\n\n"
     "For each piece c: readinto(views[c]) (views are consecutive slices of volume's\n"
     "buffer), then add runs bounds[c]:bounds[c + 1] as run_sums does.  Returns (c, got):\n"
     "(len(views), 0) when every piece was read in full, else the first piece that was not\n"
     "and the bytes readinto gave for it (its runs and the later ones are not added)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_regionsum",
                                    "Region sums kernels (see brainmatch.features.regions).",
                                    -1, methods};

PyMODINIT_FUNC
PyInit__regionsum(void)
{
    init_masks();
    return PyModule_Create(&module);
}
