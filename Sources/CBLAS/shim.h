// OpenBLAS's CBLAS interface (Debian libopenblas-dev), its thread-count controls, and the few
// LAPACK routines Amber calls (Fortran symbols exported by libopenblas; the trailing size_t
// arguments are gfortran's hidden lengths of the character arguments).
#include <cblas.h>
#include <stddef.h>

void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_length, size_t uplo_length);

void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s,
             double *u, const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork,
             int *iwork, int *info, size_t jobz_length);
