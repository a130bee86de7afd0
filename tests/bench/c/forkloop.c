/* The floor for launching a task: fork and exec N `bash -c CMD` children as fast as a minimal C
 * loop can, then report how long the loop took (ns) on stdout. The children are left running; the
 * caller kills them by their process group.
 *
 * With a third argument, a `cgroup.procs` file, every child writes 0 to it before exec: the
 * children then run in a cgroup of their own, as Hearth places a task's processes, and (with the
 * cpu controller there) compete with the loop as one group instead of one by one. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: forkloop N CMD [CGROUP_PROCS]\n");
        return 2;
    }
    int n = atoi(argv[1]);
    int procs = -1;
    if (argc > 3 && (procs = open(argv[3], O_WRONLY | O_CLOEXEC)) < 0) {
        perror(argv[3]);
        return 1;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (procs >= 0 && write(procs, "0", 1) != 1)
                _exit(126);
            /* Like a supervisor, point the child's output somewhere of its own. */
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
            close(null);
            execl("/bin/bash", "bash", "-c", argv[2], (char *)NULL);
            _exit(127);
        }
        if (pid < 0) {
            perror("fork");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    fflush(stdout);
    return 0;
}
