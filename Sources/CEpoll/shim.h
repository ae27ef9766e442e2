// epoll, eventfd and accept4 for the tracker's own HTTP listener (Sources/Tracker/TrackerHTTPListener.swift),
// which the Glibc Swift module does not bring in.
#if defined(__linux__)
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
// A GNU extension: declared here, since the Glibc module's <sys/socket.h> is read without _GNU_SOURCE.
int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);
#endif
