/* The floor of the peer benchmarks: the least a supervisor can do to run the same processes.
 *
 *   floor [-j CGROUP_PROCS]... [-r] [-g GRACE_MS] [-h PORT] N CMD
 *
 * Forks N children; each writes 0 to every CGROUP_PROCS file (descriptors opened before the
 * fork, as Hearth's keeper does), becomes a session leader, points its output at /dev/null and
 * execs `/bin/bash -c CMD`. Then it waits for signals:
 *   - a child's exit: reaped; with -r, the child is forked again at once;
 *   - SIGTERM: SIGTERM to every child's session, up to GRACE_MS (default 1000) for them to go,
 *     SIGKILL to those left, reap, exit 0.
 * With -h PORT it also does what a health checker does: once a second, `GET /health` on
 * 127.0.0.1:PORT, reading the whole response and checking for status 200.
 *
 * No allocation after start, no threads: what no supervisor can beat. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 4096
#define MAX_CGROUPS 16

static pid_t kids[MAX_CHILDREN];
static int nkids;
static int procs[MAX_CGROUPS];
static int nprocs;
static const char *cmd;
static sigset_t blocked;
static unsigned failures; /* failed health checks, as a real checker would count them */

static pid_t spawn(void) {
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < nprocs; i++)
            if (write(procs[i], "0", 1) != 1)
                _exit(126);
        setsid();
        sigprocmask(SIG_UNBLOCK, &blocked, NULL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
        execl("/bin/bash", "bash", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Reap every exited child; with `restart`, fork its slot again. Returns children left. */
static int reap(int restart) {
    pid_t pid;
    int status;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < nkids; i++) {
            if (kids[i] == pid) {
                kids[i] = restart ? spawn() : 0;
                break;
            }
        }
    }
    int left = 0;
    for (int i = 0; i < nkids; i++)
        left += kids[i] > 0;
    return left;
}

static void signal_all(int sig) {
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            kill(-kids[i], sig);
}

static void health_check(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] =
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    char buf[4096];
    int healthy = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        ssize_t n, got = 0;
        while ((n = read(fd, buf + got, sizeof buf - 1 - got)) > 0 && got < (ssize_t)sizeof buf - 1)
            got += n;
        buf[got] = 0;
        healthy = strncmp(buf, "HTTP/1.1 200", 12) == 0 || strncmp(buf, "HTTP/1.0 200", 12) == 0;
    }
    close(fd);
    failures += !healthy;
}

int main(int argc, char **argv) {
    int restart = 0, grace_ms = 1000, port = 0, opt;
    while ((opt = getopt(argc, argv, "j:rg:h:")) != -1) {
        switch (opt) {
        case 'j':
            if (nprocs == MAX_CGROUPS || (procs[nprocs++] = open(optarg, O_WRONLY | O_CLOEXEC)) < 0) {
                perror(optarg);
                return 1;
            }
            break;
        case 'r':
            restart = 1;
            break;
        case 'g':
            grace_ms = atoi(optarg);
            break;
        case 'h':
            port = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: floor [-j CGROUP_PROCS]... [-r] [-g GRACE_MS] [-h PORT] N CMD\n");
        return 2;
    }
    nkids = atoi(argv[optind]);
    cmd = argv[optind + 1];
    if (nkids < 1 || nkids > MAX_CHILDREN)
        return 2;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGCHLD);
    sigaddset(&blocked, SIGTERM);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    for (int i = 0; i < nkids; i++)
        kids[i] = spawn();

    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        siginfo_t si;
        int sig;
        if (port) {
            struct timespec now, wait;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ns = (next.tv_sec - now.tv_sec) * 1000000000L + (next.tv_nsec - now.tv_nsec);
            if (ns <= 0) {
                health_check(port);
                next.tv_sec += 1;
                continue;
            }
            wait.tv_sec = ns / 1000000000L;
            wait.tv_nsec = ns % 1000000000L;
            sig = sigtimedwait(&blocked, &si, &wait);
        } else {
            sig = sigwaitinfo(&blocked, &si);
        }
        if (sig == SIGCHLD) {
            reap(restart);
        } else if (sig == SIGTERM) {
            break;
        }
    }

    signal_all(SIGTERM);
    struct timespec deadline, now;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += grace_ms / 1000;
    deadline.tv_nsec += (grace_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    while (reap(0) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ns = (deadline.tv_sec - now.tv_sec) * 1000000000L + (deadline.tv_nsec - now.tv_nsec);
        if (ns <= 0) {
            signal_all(SIGKILL);
            while (reap(0) > 0)
                sigwaitinfo(&chld, NULL);
            break;
        }
        struct timespec wait = {ns / 1000000000L, ns % 1000000000L};
        sigtimedwait(&chld, NULL, &wait);
    }
    return 0;
}
