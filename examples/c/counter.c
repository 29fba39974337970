/* A replicated counter in C on one traft node: start a server and a node, apply ten
 * increments, print the counter each completion reports, shut down.
 *
 * Build (after `cargo build --release`):
 *   cc -Iinclude examples/c/counter.c -Ltarget/release -ltraft -o counter
 *   LD_LIBRARY_PATH=target/release ./counter /tmp/counter-data
 */
#define _DEFAULT_SOURCE /* usleep */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "traft.h"

struct counter {
    atomic_ulong value;
};

/* Runs on traft's fsm thread for each committed entry, in log order. */
static void on_apply(void *ctx, uint64_t index, uint64_t term, const uint8_t *data, size_t len,
                     TraftResponse *response) {
    struct counter *c = ctx;
    (void)index;
    (void)term;
    unsigned long add = (len == 1) ? data[0] : 0;
    unsigned long v = atomic_fetch_add(&c->value, add) + add;
    char text[32];
    int n = snprintf(text, sizeof text, "%lu", v);
    traft_response_set(response, (const uint8_t *)text, (size_t)n);
}

static atomic_int completed;
static atomic_int failed;

/* Runs once per apply, on a traft thread. */
static void on_done(void *ctx, TraftStatus status, const uint8_t *response, size_t len) {
    (void)ctx;
    if (status == TRAFT_OK) {
        printf("applied, counter now %.*s\n", (int)len, (const char *)response);
    } else {
        printf("apply failed: %s\n", traft_status_str((int)status));
        atomic_fetch_add(&failed, 1);
    }
    atomic_fetch_add(&completed, 1);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp/traft-counter";
    TraftServer *server = NULL;
    TraftStatus st = traft_server_start("127.0.0.1:0", &server);
    if (st != TRAFT_OK) {
        fprintf(stderr, "server: %s\n", traft_status_str((int)st));
        return 1;
    }
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%u:0", traft_server_port(server));
    struct counter c = {0};
    TraftFsm fsm = {.ctx = &c, .on_apply = on_apply, .on_leader_start = NULL, .on_stop = NULL};
    TraftNode *node = NULL;
    st = traft_node_start(server, "counter", peer, peer, dir, fsm, 300, &node);
    if (st != TRAFT_OK) {
        fprintf(stderr, "node: %s\n", traft_status_str((int)st));
        return 1;
    }
    while (!traft_node_is_leader(node)) {
        usleep(1000);
    }
    char leader[64];
    if (traft_node_leader(node, leader, sizeof leader) > 0) {
        printf("leader is %s\n", leader);
    }
    for (int i = 0; i < 10; i++) {
        uint8_t one = 1;
        if (traft_node_apply(node, &one, 1, on_done, NULL) != TRAFT_OK) {
            return 1;
        }
    }
    while (atomic_load(&completed) < 10) {
        usleep(1000);
    }
    traft_node_shutdown(node);
    traft_server_free(server);
    printf("counter %lu\n", atomic_load(&c.value));
    return atomic_load(&failed) == 0 && atomic_load(&c.value) == 10 ? 0 : 1;
}
