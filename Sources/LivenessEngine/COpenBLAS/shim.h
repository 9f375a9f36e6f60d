// COpenBLAS: the CBLAS interface and OpenBLAS's runtime queries (core name, thread count).
// Debian's libopenblas-dev installs cblas.h (with openblas_get_corename and
// openblas_set_num_threads) under the pkg-config include path; nothing is redeclared here.
#pragma once
#include <cblas.h>
