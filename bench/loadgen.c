/*
 * mcastd bench load generator: sends COUNT datagrams of SIZE bytes to an IPv4
 * multicast GROUP:PORT at RATE per second (0 = as fast as the kernel takes
 * them) and matches the replies to the sequence numbers it sent.
 *
 * Built by bench/loadgen.py with gcc at bench time; run only inside the
 * bench's own network namespace.  One thread: it sends on schedule and drains
 * replies while it waits, so no reply is left in the socket for long.  Reply
 * times are kernel receive timestamps (SO_TIMESTAMPNS), so the RTT does not
 * include the time a reply waited for the generator to get round to it.
 *
 * Payload: "seq=NNNNNNNNNN " padded with 'x' to SIZE bytes.  Every responder
 * benchmarked upper-cases it, so a reply is matched by finding "SEQ=" in it.
 * The payload never contains "STOP" (upstream stops on that substring).
 *
 * With SOCKETS > 1, socket s is bound to its own loopback address 127.0.x.y, so that
 * the responder sees that many source hosts.
 *
 * Prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKS 256
#define BATCH 64
#define MAX_REPLY 2048

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct state {
    int nsocks;
    int fds[MAX_SOCKS];
    uint64_t count;
    int64_t *sent_at;   /* ns, CLOCK_REALTIME; 0 = not sent */
    int64_t *rtt;       /* ns; -1 = not answered */
    uint64_t answered, dups, foreign;
    int64_t first_send, last_reply;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    char bufs[BATCH][MAX_REPLY];
    char ctrl[BATCH][CMSG_SPACE(sizeof(struct timespec))];
};

static void handle_reply(struct state *st, const char *buf, size_t len, int64_t at) {
    /* find "SEQ=" followed by ten digits */
    const char *end = buf + len;
    for (const char *p = buf; p + 14 <= end; p++) {
        if (p[0] != 'S' || p[1] != 'E' || p[2] != 'Q' || p[3] != '=')
            continue;
        uint64_t seq = 0;
        for (int i = 4; i < 14; i++) {
            if (p[i] < '0' || p[i] > '9') {
                st->foreign++;
                return;
            }
            seq = seq * 10 + (uint64_t)(p[i] - '0');
        }
        if (seq >= st->count || st->sent_at[seq] == 0) {
            st->foreign++;
            return;
        }
        if (st->rtt[seq] >= 0) {
            st->dups++;
            return;
        }
        st->rtt[seq] = at - st->sent_at[seq];
        st->answered++;
        if (at > st->last_reply)
            st->last_reply = at;
        return;
    }
    st->foreign++;
}

/* Read every reply waiting on every socket; returns how many were read. */
static uint64_t drain(struct state *st) {
    uint64_t total = 0;
    for (int s = 0; s < st->nsocks; s++) {
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                st->iov[i].iov_base = st->bufs[i];
                st->iov[i].iov_len = MAX_REPLY;
                memset(&st->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
                st->msgs[i].msg_hdr.msg_iov = &st->iov[i];
                st->msgs[i].msg_hdr.msg_iovlen = 1;
                st->msgs[i].msg_hdr.msg_control = st->ctrl[i];
                st->msgs[i].msg_hdr.msg_controllen = sizeof(st->ctrl[i]);
            }
            int n = recvmmsg(st->fds[s], st->msgs, BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break;
            int64_t fallback = now_ns();
            for (int i = 0; i < n; i++) {
                int64_t at = fallback;
                struct msghdr *mh = &st->msgs[i].msg_hdr;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(c), sizeof ts);
                        at = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                    }
                }
                handle_reply(st, st->bufs[i], st->msgs[i].msg_len, at);
            }
            total += (uint64_t)n;
            if (n < BATCH)
                break;
        }
    }
    return total;
}

/* Wait up to timeout_ns for a reply on any socket, then drain. */
static void wait_and_drain(struct state *st, int64_t timeout_ns) {
    struct pollfd pfd[MAX_SOCKS];
    for (int s = 0; s < st->nsocks; s++) {
        pfd[s].fd = st->fds[s];
        pfd[s].events = POLLIN;
    }
    if (timeout_ns < 0)
        timeout_ns = 0;
    struct timespec ts = {timeout_ns / 1000000000LL, timeout_ns % 1000000000LL};
    if (ppoll(pfd, (nfds_t)st->nsocks, &ts, NULL) > 0)
        drain(st);
}

/* Drops counted by the kernel on our own sockets (last column of /proc/net/udp). */
static uint64_t own_drops(struct state *st) {
    unsigned ports[MAX_SOCKS];
    for (int s = 0; s < st->nsocks; s++) {
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        getsockname(st->fds[s], (struct sockaddr *)&a, &al);
        ports[s] = ntohs(a.sin_port);
    }
    FILE *f = fopen("/proc/net/udp", "r");
    if (!f)
        return 0;
    char line[512];
    uint64_t drops = 0;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned addr, port;
        if (sscanf(line, " %*d: %8X:%4X", &addr, &port) != 2)
            continue;
        for (int s = 0; s < st->nsocks; s++) {
            if (port == ports[s]) {
                char *last = strrchr(line, ' ');
                if (last)
                    drops += strtoull(last + 1, NULL, 10);
            }
        }
    }
    fclose(f);
    return drops;
}

static double pct(const int64_t *sorted, uint64_t n, double p) {
    if (n == 0)
        return -1.0;
    /* nearest-rank percentile */
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen GROUP PORT COUNT RATE [SOCKETS [SIZE [IDLE_MS [MAX_DRAIN_MS]]]]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5)
        usage();
    const char *group = argv[1];
    int port = atoi(argv[2]);
    uint64_t count = strtoull(argv[3], NULL, 10);
    double rate = atof(argv[4]);
    int nsocks = argc > 5 ? atoi(argv[5]) : 1;
    int size = argc > 6 ? atoi(argv[6]) : 64;
    int64_t idle_ns = (argc > 7 ? atoll(argv[7]) : 300) * 1000000LL;
    int64_t max_drain_ns = (argc > 8 ? atoll(argv[8]) : 5000) * 1000000LL;
    if (nsocks < 1 || nsocks > MAX_SOCKS || size < 16 || size > 1400 || count == 0 ||
        count > 99999999ULL)
        usage();

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    static struct state st;
    st.nsocks = nsocks;
    st.count = count;
    st.sent_at = calloc(count, sizeof(int64_t));
    st.rtt = malloc(count * sizeof(int64_t));
    if (!st.sent_at || !st.rtt) {
        perror("malloc");
        return 1;
    }
    memset(st.rtt, 0xff, count * sizeof(int64_t));

    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, group, &dst.sin_addr) != 1)
        usage();
    struct in_addr lo = {.s_addr = htonl(INADDR_LOOPBACK)};
    for (int s = 0; s < nsocks; s++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0) {
            perror("socket");
            return 1;
        }
        int one = 1, ttl = 1, rcvbuf = 32 << 20;
        /* socket s sends from 127.0.x.y, so several sockets are several source hosts
           (mcastd's reply limits are per source address) */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + ((uint32_t)(s / 250) << 8) + (uint32_t)(s % 250));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) {
            perror("socket setup");
            return 1;
        }
        /* big receive buffer so that replies are never dropped on our side;
           SO_RCVBUFFORCE needs CAP_NET_ADMIN, fall back to the capped one */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        st.fds[s] = fd;
    }

    char payload[1400];
    memset(payload, 'x', sizeof payload);
    uint64_t send_errors = 0;
    int64_t interval = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    int64_t t0 = now_ns();
    st.first_send = t0;
    uint64_t i;
    for (i = 0; i < count && !stop_flag; i++) {
        if (interval > 0) {
            int64_t due = t0 + (int64_t)((double)i * 1e9 / rate);
            for (;;) {
                int64_t left = due - now_ns();
                if (left <= 0)
                    break;
                if (left > 150000)
                    wait_and_drain(&st, left - 100000);
                else
                    drain(&st);
            }
        } else if ((i & 31) == 0) {
            drain(&st);
        }
        char head[16];
        snprintf(head, sizeof head, "seq=%010" PRIu64, i);
        memcpy(payload, head, 14);
        payload[14] = ' ';
        int s = (int)(i % (uint64_t)nsocks);
        st.sent_at[i] = now_ns();
        while (sendto(st.fds[s], payload, (size_t)size, 0, (struct sockaddr *)&dst, sizeof dst) <
               0) {
            if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR) {
                perror("sendto");
                return 1;
            }
            send_errors++;
            drain(&st);
        }
    }
    uint64_t sent = i;
    int64_t send_end = now_ns();

    /* collect replies until all are in or none came for idle_ns */
    int64_t last_progress = now_ns();
    while (st.answered < sent && !stop_flag) {
        int64_t now = now_ns();
        if (now - last_progress > idle_ns || now - send_end > max_drain_ns)
            break;
        uint64_t before = st.answered + st.dups + st.foreign;
        wait_and_drain(&st, 20000000LL);
        if (st.answered + st.dups + st.foreign != before)
            last_progress = now_ns();
    }
    uint64_t drops = own_drops(&st);

    int64_t *r = malloc((st.answered ? st.answered : 1) * sizeof(int64_t));
    uint64_t k = 0;
    for (uint64_t j = 0; j < sent; j++)
        if (st.rtt[j] >= 0)
            r[k++] = st.rtt[j];
    qsort(r, k, sizeof(int64_t), cmp_i64);

    double send_s = (double)(send_end - t0) / 1e9;
    double span_s = st.last_reply > t0 ? (double)(st.last_reply - t0) / 1e9 : 0.0;
    printf("{\"sent\": %" PRIu64 ", \"answered\": %" PRIu64 ", \"duplicates\": %" PRIu64
           ", \"foreign\": %" PRIu64 ", \"send_errors\": %" PRIu64 ", \"client_drops\": %" PRIu64
           ", \"send_seconds\": %.6f, \"span_seconds\": %.6f"
           ", \"rtt_p50_us\": %.1f, \"rtt_p99_us\": %.1f, \"rtt_max_us\": %.1f}\n",
           sent, st.answered, st.dups, st.foreign, send_errors, drops, send_s, span_s,
           pct(r, k, 50), pct(r, k, 99), pct(r, k, 100));
    free(r);
    return 0;
}
