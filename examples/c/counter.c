/* A replicated counter in C on one traft node: start a server and a node, apply ten
 * increments, print the counter each completion reports, take a snapshot, shut down; then
 * start the node again from its directory (the state machine loads the snapshot) and apply
 * one more increment.
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

/* Runs on traft's fsm thread: writes the counter into the snapshot's directory. It could
 * also hand `writer` to another thread and finish later. */
static void on_snapshot_save(void *ctx, const char *dir, TraftSnapshotWriter *writer) {
    struct counter *c = ctx;
    char path[4096];
    snprintf(path, sizeof path, "%s/counter", dir);
    FILE *f = fopen(path, "w");
    int ok = f != NULL && fprintf(f, "%lu\n", atomic_load(&c->value)) > 0;
    ok = (f != NULL && fclose(f) == 0) && ok;
    ok = ok && traft_snapshot_add_file(writer, "counter") == TRAFT_OK;
    traft_snapshot_done(writer, ok ? TRAFT_OK : TRAFT_IO);
}

/* Runs on traft's fsm thread when the node starts from a snapshot. */
static TraftStatus on_snapshot_load(void *ctx, const char *dir) {
    struct counter *c = ctx;
    char path[4096];
    snprintf(path, sizeof path, "%s/counter", dir);
    FILE *f = fopen(path, "r");
    unsigned long v = 0;
    int ok = f != NULL && fscanf(f, "%lu", &v) == 1;
    if (f != NULL) {
        fclose(f);
    }
    if (!ok) {
        return TRAFT_CORRUPTION;
    }
    atomic_store(&c->value, v);
    printf("loaded counter %lu from the snapshot\n", v);
    return TRAFT_OK;
}

static atomic_int completed;
static atomic_int failed;
static atomic_int snapshotted;

/* Runs once, on a traft thread, when the snapshot is saved or failed. */
static void on_snapshot_done(void *ctx, TraftStatus status, uint64_t value) {
    (void)ctx;
    (void)value;
    printf("snapshot: %s\n", traft_status_str((int)status));
    atomic_store(&snapshotted, status == TRAFT_OK ? 1 : -1);
}

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

/* Starts the node of `dir` and waits until it leads (it is the only voter). */
static TraftNode *start(TraftServer *server, const char *peer, const char *dir, TraftFsm fsm) {
    TraftNode *node = NULL;
    TraftStatus st = traft_node_start(server, "counter", peer, peer, dir, fsm, 300, &node);
    if (st != TRAFT_OK) {
        fprintf(stderr, "node: %s\n", traft_status_str((int)st));
        exit(1);
    }
    while (!traft_node_is_leader(node)) {
        usleep(1000);
    }
    return node;
}

/* Applies `n` increments and waits for their completions. */
static void increment(TraftNode *node, int n) {
    int target = atomic_load(&completed) + n;
    for (int i = 0; i < n; i++) {
        uint8_t one = 1;
        if (traft_node_apply(node, &one, 1, on_done, NULL) != TRAFT_OK) {
            exit(1);
        }
    }
    while (atomic_load(&completed) < target) {
        usleep(1000);
    }
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
    TraftFsm fsm = {.ctx = &c,
                    .on_apply = on_apply,
                    .on_snapshot_save = on_snapshot_save,
                    .on_snapshot_load = on_snapshot_load};
    TraftNode *node = start(server, peer, dir, fsm);
    char leader[64];
    size_t n = traft_node_leader(node, leader, sizeof leader);
    if (n > 0 && n < sizeof leader) {
        printf("leader is %s\n", leader);
    }
    increment(node, 10);
    if (traft_node_snapshot(node, on_snapshot_done, NULL) != TRAFT_OK) {
        return 1;
    }
    while (atomic_load(&snapshotted) == 0) {
        usleep(1000);
    }
    traft_node_shutdown(node);
    printf("counter %lu\n", atomic_load(&c.value));
    /* A restart: the state machine starts empty and loads the snapshot. */
    atomic_store(&c.value, 0);
    node = start(server, peer, dir, fsm);
    increment(node, 1);
    traft_node_shutdown(node);
    traft_server_free(server);
    printf("counter %lu after the restart\n", atomic_load(&c.value));
    return atomic_load(&failed) == 0 && atomic_load(&snapshotted) == 1 &&
                   atomic_load(&c.value) == 11
               ? 0
               : 1;
}
