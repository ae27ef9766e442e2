// glibc's malloc tuning (mallopt), which the Glibc Swift module does not bring in.
#if defined(__linux__)
#include <malloc.h>
#endif
