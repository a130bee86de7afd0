/* A process that marks its life in a file and ends at once, for restart latency:
 *
 *   stamp FILE
 *
 * appends "s <wall clock>" as soon as it runs and "e <wall clock>" right before `_exit(0)`.
 * The restart latency of a supervisor is then the gap from one "e" to the next "s". */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void mark(int fd, char what) {
    char buf[64];
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    int len = snprintf(buf, sizeof buf, "%c %lld.%09ld\n", what, (long long)t.tv_sec, t.tv_nsec);
    if (write(fd, buf, (size_t)len) != len)
        _exit(1);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return 1;
    mark(fd, 's');
    mark(fd, 'e');
    _exit(0);
}
