/*
 * tcpbench: TCP throughput and latency between two endpoints, for bench/network_bench.py.
 * Compiled at bench time with `gcc -O2 -static`, so it runs in busybox containers as is.
 *
 *   tcpbench serve PORT            listen on 0.0.0.0:PORT (0: any; the port is printed), one
 *                                  child per connection; the first byte picks the test
 *   tcpbench tput HOST PORT SECS   send for SECS seconds in 128 KiB writes, then wait for the
 *                                  server's count of bytes received; prints "BYTES SECONDS"
 *                                  (the clock stops when the server has read everything)
 *   tcpbench lat HOST PORT COUNT   COUNT round trips of a 64-byte message (TCP_NODELAY both
 *                                  ways) after 200 warm-up ones; prints "MEDIAN_US P99_US"
 *
 * HOST is an IPv4 address. Exit status 0, or 1 with the failing call on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (128 * 1024)
#define MESSAGE 64
#define WARMUP 200

static void die(const char *what) {
    fprintf(stderr, "tcpbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void full_write(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* 1 when n bytes were read, 0 on end of stream before any byte. */
static int full_read(int fd, void *buf, size_t n) {
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            if (got == 0) return 0;
            errno = EPIPE;
            die("read (short message)");
        }
        got += (size_t)r;
    }
    return 1;
}

static void no_delay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
}

static void serve_one(int fd) {
    char mode;
    if (!full_read(fd, &mode, 1)) return;
    if (mode == 'T') {
        static char buf[CHUNK];
        uint64_t total = 0;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0) {
                if (errno == EINTR) continue;
                die("read");
            }
            if (r == 0) break;
            total += (uint64_t)r;
        }
        full_write(fd, &total, sizeof total);
    } else if (mode == 'L') {
        char msg[MESSAGE];
        no_delay(fd);
        while (full_read(fd, msg, sizeof msg)) full_write(fd, msg, sizeof msg);
    }
}

static int serve(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof addr;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(fd, 16) < 0) die("listen");
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            close(fd);
            serve_one(conn);
            _exit(0);
        }
        close(conn);
    }
}

static int dial(const char *host, int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "tcpbench: not an IPv4 address: %s\n", host);
        exit(1);
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    return fd;
}

static int throughput(const char *host, int port, double seconds) {
    static char buf[CHUNK];
    uint64_t sent = 0, received = 0;
    int fd = dial(host, port);
    memset(buf, 'x', sizeof buf);
    full_write(fd, "T", 1);
    double start = now();
    while (now() - start < seconds) {
        full_write(fd, buf, sizeof buf);
        sent += sizeof buf;
    }
    if (shutdown(fd, SHUT_WR) < 0) die("shutdown");
    if (!full_read(fd, &received, sizeof received)) die("read (no count)");
    double elapsed = now() - start;
    if (received != sent) {
        fprintf(stderr, "tcpbench: sent %llu bytes, the server read %llu\n",
                (unsigned long long)sent, (unsigned long long)received);
        return 1;
    }
    printf("%llu %.6f\n", (unsigned long long)received, elapsed);
    return 0;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int latency(const char *host, int port, int count) {
    char msg[MESSAGE];
    double *rtt = calloc((size_t)count, sizeof *rtt);
    int fd = dial(host, port);
    if (rtt == NULL) die("calloc");
    memset(msg, 'l', sizeof msg);
    no_delay(fd);
    full_write(fd, "L", 1);
    for (int i = -WARMUP; i < count; i++) {
        double start = now();
        full_write(fd, msg, sizeof msg);
        if (!full_read(fd, msg, sizeof msg)) die("read (server gone)");
        if (i >= 0) rtt[i] = (now() - start) * 1e6;
    }
    qsort(rtt, (size_t)count, sizeof *rtt, compare);
    printf("%.2f %.2f\n", rtt[count / 2], rtt[(int)((count - 1) * 0.99)]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "tput") == 0)
        return throughput(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc == 5 && strcmp(argv[1], "lat") == 0 && atoi(argv[4]) > 0)
        return latency(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: tcpbench serve PORT | tput HOST PORT SECS | lat HOST PORT COUNT\n");
    return 2;
}
