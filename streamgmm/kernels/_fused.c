/* The E-step of a chunk, fused: features, log-densities, softmax and statistics (or, for
 * scoring, the responsibilities) computed tile by tile without leaving the cache.
 *
 * The features' layout is the caller's: "full" below; "diag" (1, u_i, u_i^2) for diagonal and
 * spherical covariances, "linear" (1, u_i) for tied ones, whose shared term u'Pu/2 and
 * unweighted second moment the kernel adds on the side (streamgmm/kernels/expansion.py).
 *
 * It computes exactly what streamgmm/kernels/quadratic.py's chunk_statistics does with numpy and
 * BLAS (see that module for the algebra): with u = x - shift and the quadratic features
 * z(u) = [1, u_1 .. u_d, u_i u_j for i <= j], the weighted log-densities are V z, the
 * responsibilities their softmax, and the statistics S = sum over records of r z' (r times the
 * record's weight when the caller gives weights). The BLAS
 * kernel writes Z for a block to memory and reads it back twice; here z is rebuilt from u in
 * registers wherever it is needed, a tile of records at a time along the vector lanes (16 with
 * AVX-512).
 *
 * Per block of BLOCK records:
 *   1. u (d x BLOCK, in the kernel's precision) from the float64 columns, and the log-densities of each group of
 *      8 components: 8 accumulators in registers, one multiply-add each per feature.
 *      Components the caller flags as direct take ||W_k [1; u]||^2 instead (the guard against
 *      cancellation in the expanded form; quadratic.direct_components).
 *   2. The softmax of each record's log-densities, with exp computed by a vector polynomial;
 *      the log-likelihood of each record in float64.
 *   3. The statistics: for each feature z_j and each group of 8 components, 8 accumulators of
 *      a tile's lanes over the block's tiles, reduced in float64 at the end of the block.
 *
 * The kernel (_fused_kernel.h) is written with GCC's vector extensions and compiled once per
 * instruction set and precision (_fused_{avx512,avx2}_{f32,f64}.c); this module picks the widest
 * set the CPU runs when it loads, and holds the Python interface. Computing in float32 is what
 * streamgmm's compute_dtype="float32" asks for; the statistics are summed in float64 either way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#include "_fused.h"

typedef struct {
    const char *name;
    int (*run_float)(const Chunk *);
    int (*run_double)(const Chunk *);
} Variant;

/* widest first; none on a CPU without AVX2 and FMA, where the BLAS kernel is faster (see
 * docs/performance.md, "Tuning constants") */
static Variant variants[2];
static int n_variants = 0;

static void find_variants(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (Variant){"avx512", fused_run_avx512_f32, fused_run_avx512_f64};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (Variant){"avx2", fused_run_avx2_f32, fused_run_avx2_f64};
#endif
}

static int check(Py_buffer *buffer, Py_ssize_t items, Py_ssize_t itemsize, const char *name) {
    if (buffer->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "_fused.chunk_statistics: %s has %zd bytes, expected %zd",
                     name, buffer->len, items * itemsize);
        return 0;
    }
    return 1;
}

/* The number of features of a layout (see _fused.h), or 0 for an unknown name. */
static Py_ssize_t n_features_of(const char *layout, Py_ssize_t d) {
    if (strcmp(layout, "full") == 0) return 1 + d + d * (d + 1) / 2;
    if (strcmp(layout, "diag") == 0) return 1 + 2 * d;
    if (strcmp(layout, "linear") == 0) return 1 + d;
    return 0;
}

/* The shared body of chunk_statistics and run: resp is NULL (sum the statistics into S) or
 * the (n, k) buffer the responsibilities are written to; weights (n float64) and weighted_log
 * (1 float64) are both NULL or both given (see Chunk). */
static PyObject *fused(const char *caller, Py_ssize_t n, Py_ssize_t d, Py_ssize_t k, Py_ssize_t itemsize,
                       const char *layout, PyObject *records, Py_buffer *shift, Py_buffer *V, Py_buffer *direct,
                       Py_buffer *W, Py_buffer *constant, Py_buffer *S, Py_buffer *log_norm, Py_buffer *resp,
                       const char *name, Py_buffer *shared, Py_buffer *shared_second, Py_buffer *weights,
                       Py_buffer *weighted_log) {
    Chunk c;
    Py_buffer X = {0};
    PyObject *result = NULL;
    int *left = NULL, *right = NULL;
    const Variant *variant = n_variants ? &variants[0] : NULL;
    if (name != NULL) {
        variant = NULL;
        for (int i = 0; i < n_variants; i++)
            if (strcmp(variants[i].name, name) == 0) variant = &variants[i];
        if (variant == NULL) {
            PyErr_Format(PyExc_ValueError, "_fused.%s: no %s kernel on this CPU", caller, name);
            goto done;
        }
    }
    if (variant == NULL) {
        PyErr_Format(PyExc_RuntimeError, "_fused.%s: this CPU runs none of the kernels", caller);
        goto done;
    }
    if (n < 0 || d < 1 || k < 1) {
        PyErr_Format(PyExc_ValueError, "_fused.%s: bad shape", caller);
        goto done;
    }
    if (itemsize != 4 && itemsize != 8) {
        PyErr_Format(PyExc_ValueError, "_fused.%s: itemsize is 4 (float32) or 8 (float64)", caller);
        goto done;
    }
    const Py_ssize_t p = n_features_of(layout, d), padded = (k + GROUP - 1) / GROUP * GROUP;
    if (p == 0) {
        PyErr_Format(PyExc_ValueError, "_fused.%s: layout is 'full', 'diag' or 'linear', not %s", caller, layout);
        goto done;
    }
    /* X is (d, n) float64 with each feature's records contiguous; features may lie any whole
     * number of doubles apart (the rows of a column-major chunk's slice) */
    if (PyObject_GetBuffer(records, &X, PyBUF_STRIDES | PyBUF_FORMAT) < 0) goto done;
    if (X.ndim != 2 || X.shape[0] != d || X.shape[1] != n || X.itemsize != 8 || strcmp(X.format, "d") != 0 ||
        (n > 1 && X.strides[1] != 8) || X.strides[0] < 0 || X.strides[0] % 8 != 0) {
        PyErr_Format(PyExc_ValueError, "_fused.%s: X must be (d, n) float64 with contiguous rows", caller);
        goto done;
    }
    if (!(check(shift, d, 8, "shift") && check(V, padded * p, itemsize, "V") && check(direct, k, 1, "direct") &&
          check(W, k * d * (d + 1), itemsize, "W") && check(constant, k, itemsize, "direct_constant") &&
          check(S, k * p, 8, "S") && check(log_norm, n, 8, "log_norm") &&
          (resp == NULL || check(resp, n * k, itemsize, "resp")) &&
          (shared == NULL || check(shared, d * (d + 1), itemsize, "shared")) &&
          (shared_second == NULL || check(shared_second, d * d, 8, "shared_second")) &&
          (weights == NULL || check(weights, n, 8, "weights")) &&
          (weighted_log == NULL || check(weighted_log, 1, 8, "weighted_log"))))
        goto done;
    if ((weights == NULL) != (weighted_log == NULL)) {
        PyErr_Format(PyExc_ValueError, "_fused.%s: weights and weighted_log go together", caller);
        goto done;
    }
    left = malloc(sizeof(int) * (p + PADDING));
    right = malloc(sizeof(int) * (p + PADDING));
    if (!left || !right) {
        PyErr_NoMemory();
        goto done;
    }
    /* the features in the Python side's order: 1, u_1 .. u_d, then the layout's squares */
    Py_ssize_t j = 0;
    left[j] = right[j] = (int)d, j++;
    for (Py_ssize_t i = 0; i < d; i++) left[j] = (int)i, right[j] = (int)d, j++;
    if (layout[0] == 'f')
        for (Py_ssize_t i = 0; i < d; i++)
            for (Py_ssize_t m = i; m < d; m++) left[j] = (int)i, right[j] = (int)m, j++;
    else if (layout[0] == 'd')
        for (Py_ssize_t i = 0; i < d; i++) left[j] = right[j] = (int)i, j++;
    for (; j < p + PADDING; j++) left[j] = right[j] = (int)d;
    c = (Chunk){n, d, k, p, X.buf, X.strides[0] / 8, shift->buf, V->buf, direct->buf, W->buf, constant->buf, left,
                right, S->buf, log_norm->buf, resp == NULL ? NULL : resp->buf, shared == NULL ? NULL : shared->buf,
                shared_second == NULL ? NULL : shared_second->buf, weights == NULL ? NULL : weights->buf,
                weighted_log == NULL ? NULL : weighted_log->buf, layout[0] == 'd'};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = itemsize == 4 ? variant->run_float(&c) : variant->run_double(&c);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    free(left);
    free(right);
    PyBuffer_Release(&X);
    return result;
}

static PyObject *chunk_statistics(PyObject *self, PyObject *args) {
    Py_ssize_t n, d, k, itemsize;
    const char *name = NULL;
    PyObject *records;
    Py_buffer shift, V, direct, W, constant, S, log_norm;
    if (!PyArg_ParseTuple(args, "nnnnOy*y*y*y*y*w*w*|s", &n, &d, &k, &itemsize, &records, &shift, &V, &direct, &W,
                          &constant, &S, &log_norm, &name))
        return NULL;
    PyObject *result = fused("chunk_statistics", n, d, k, itemsize, "full", records, &shift, &V, &direct, &W,
                             &constant, &S, &log_norm, NULL, name, NULL, NULL, NULL, NULL);
    Py_buffer *all[] = {&shift, &V, &direct, &W, &constant, &S, &log_norm};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) PyBuffer_Release(all[i]);
    return result;
}

/* A None argument, or a buffer of it (writable if asked); 0 on failure with the error set. */
static int optional_buffer(PyObject *object, Py_buffer *buffer, Py_buffer **out, int writable) {
    *out = NULL;
    if (object == Py_None) return 1;
    if (PyObject_GetBuffer(object, buffer, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0) return 0;
    *out = buffer;
    return 1;
}

static PyObject *run(PyObject *self, PyObject *args) {
    Py_ssize_t n, d, k, itemsize;
    const char *layout, *name = NULL;
    PyObject *records, *resp_object, *shared_object = Py_None, *second_object = Py_None;
    PyObject *weights_object = Py_None, *total_object = Py_None;
    Py_buffer shift, V, direct, W, constant, S, log_norm, resp = {0}, shared = {0}, shared_second = {0};
    Py_buffer weights = {0}, weighted_log = {0};
    Py_buffer *resp_buffer, *shared_buffer, *second_buffer, *weights_buffer = NULL, *total_buffer = NULL;
    if (!PyArg_ParseTuple(args, "nnnnsOy*y*y*y*y*w*w*O|zOOOO", &n, &d, &k, &itemsize, &layout, &records, &shift, &V,
                          &direct, &W, &constant, &S, &log_norm, &resp_object, &name, &shared_object, &second_object,
                          &weights_object, &total_object))
        return NULL;
    PyObject *result = NULL;
    if (optional_buffer(resp_object, &resp, &resp_buffer, 1) && optional_buffer(shared_object, &shared, &shared_buffer, 0) &&
        optional_buffer(second_object, &shared_second, &second_buffer, 1) &&
        optional_buffer(weights_object, &weights, &weights_buffer, 0) &&
        optional_buffer(total_object, &weighted_log, &total_buffer, 1))
        result = fused("run", n, d, k, itemsize, layout, records, &shift, &V, &direct, &W, &constant, &S, &log_norm,
                       resp_buffer, name, shared_buffer, second_buffer, weights_buffer, total_buffer);
    Py_buffer *all[] = {&shift, &V, &direct, &W, &constant, &S, &log_norm, &resp, &shared, &shared_second, &weights,
                        &weighted_log};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) PyBuffer_Release(all[i]);
    return result;
}

static PyObject *kernels(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(n_variants);
    if (names == NULL) return NULL;
    for (int i = 0; i < n_variants; i++) {
        PyObject *name = PyUnicode_FromString(variants[i].name);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyList_SET_ITEM(names, i, name);
    }
    return names;
}

static PyMethodDef methods[] = {
    {"chunk_statistics", chunk_statistics, METH_VARARGS,
     "chunk_statistics(n, d, k, itemsize, X, shift, V, direct, W, direct_constant, S, log_norm[, kernel]): the "
     "fused E-step in float32 (itemsize 4) or float64 (8), V, W and direct_constant in that precision; adds the "
     "chunk's statistics to S and writes log_norm. Called by streamgmm.kernels.quadratic."},
    {"run", run, METH_VARARGS,
     "run(n, d, k, itemsize, layout, X, shift, V, direct, W, direct_constant, S, log_norm, resp[, kernel[, shared[, "
     "shared_second[, weights, weighted_log]]]]): the fused E-step over the features of layout ('full', 'diag' or 'linear'); with resp None "
     "it adds the chunk's statistics to S, else it writes the responsibilities (n, k) in the kernel's precision to "
     "resp. Both write log_norm, less ||shared [1; u]||^2 / 2 when shared (d, d + 1) is given; shared_second (d, d) "
     "gets the upper triangle of sum u u' added. With weights (n float64) each record's responsibilities (and its "
     "u u') are scaled by its weight before they are summed, and weighted_log (1 float64) gets the sum of weight "
     "times log-likelihood added, records of weight zero adding nothing. Called by streamgmm.kernels.quadratic."},
    {"kernels", kernels, METH_NOARGS, "kernels(): the builds this CPU runs, widest (the default) first; may be empty."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fused(void) {
    find_variants();
    return PyModule_Create(&module);
}
