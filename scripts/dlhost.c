/*
 * dlhost: a small C host that loads libcodervpn exactly as the macOS
 * NetworkExtension does -- dlopen(RTLD_NOW|RTLD_LOCAL), dlsym of the three
 * exports, coderStartVPN with fds it holds, coderStopVPN -- and never
 * dlcloses it (a Go c-shared library cannot be unloaded).
 *
 * Usage (internal/dlhost drives it; the CLI's dylib backend, its tests and
 * the benchmarks go through that package):
 *   dlhost LIB serve CTL_FD
 *       Obey commands arriving on CTL_FD, a SOCK_SEQPACKET unix socket; each
 *       command is one packet and gets one reply packet "ok ..." or "err ...":
 *         start T R W   T, R, W are either an integer passed as is (e.g. -1)
 *                       or "fd", meaning the next fd attached to the packet
 *                       (SCM_RIGHTS). Attached fds are closed right after the
 *                       call, as a host may: the library keeps its own dups.
 *                       Reply: "ok RC".
 *         stop H        Reply: "ok RC".
 *         version       Reply: "ok VERSION".
 *         stats         Reply: "ok fds=N rss_kb=N hwm_kb=N anon_kb=N".
 *         fds           Reply: "ok FD:TARGET ..." for every open fd (Linux).
 *         threads N I   N threads each make I rounds of bad starts, stops of
 *                       unknown handles and version calls at once. Reply: "ok".
 *         quit          Reply "ok", exit 0.
 *       End of file on CTL_FD (the parent is gone) also exits 0.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int32_t (*start_fn)(int32_t, int32_t, int32_t);
typedef int32_t (*stop_fn)(int32_t);
typedef const char *(*version_fn)(void);

static start_fn start_vpn;
static stop_fn stop_vpn;
static version_fn vpn_version;

static void *must_sym(void *lib, const char *name) {
	void *p = dlsym(lib, name);
	if (p == NULL) {
		fprintf(stderr, "dlhost: dlsym %s: %s\n", name, dlerror());
		exit(2);
	}
	return p;
}

static int count_fds(void) {
#ifdef __APPLE__
	const char *dir = "/dev/fd";
#else
	const char *dir = "/proc/self/fd";
#endif
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static long status_kb(const char *key) {
	FILE *f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	char line[256];
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* list_fds writes "fd:target" for each open fd into buf (Linux /proc). */
static void list_fds(char *buf, size_t len) {
	size_t used = 0;
	buf[0] = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		char path[300], target[256];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof target - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		int w = snprintf(buf + used, len - used, "%s%s:%s", used ? " " : "", e->d_name, target);
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
	}
	closedir(d);
}

struct stress { int iters; };

static void *stress_thread(void *arg) {
	struct stress *s = arg;
	for (int i = 0; i < s->iters; i++) {
		(void)stop_vpn(-1000 - i);
		(void)stop_vpn(1 << 30);
		(void)start_vpn(-1, -5, -5);
		(void)start_vpn(-7, 1 << 20, 1 << 20);
		if (vpn_version() == NULL)
			abort();
	}
	return NULL;
}

static void reply(int ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int ctl, const char *fmt, ...) {
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (send(ctl, buf, (size_t)n, MSG_NOSIGNAL) < 0) {
		perror("dlhost: send reply");
		exit(2);
	}
}

/* recv_cmd reads one command packet and up to 3 attached fds. */
static ssize_t recv_cmd(int ctl, char *buf, size_t len, int *fds, int *nfds) {
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	ssize_t n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);
	*nfds = 0;
	if (n <= 0)
		return n;
	buf[n] = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k && *nfds < 3; i++)
			memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	return n;
}

static int serve(int ctl) {
	char buf[256];
	int fds[3], nfds;
	for (;;) {
		ssize_t n = recv_cmd(ctl, buf, sizeof buf, fds, &nfds);
		if (n == 0)
			return 0;
		if (n < 0) {
			perror("dlhost: recvmsg");
			return 2;
		}
		char a[3][32];
		int h, iters, threads;
		if (sscanf(buf, "start %31s %31s %31s", a[0], a[1], a[2]) == 3) {
			int32_t v[3];
			int used = 0, bad = 0;
			for (int i = 0; i < 3; i++) {
				if (strcmp(a[i], "fd") == 0) {
					if (used < nfds)
						v[i] = fds[used++];
					else
						bad = 1;
				} else
					v[i] = (int32_t)strtol(a[i], NULL, 10);
			}
			if (bad) {
				reply(ctl, "err start: fewer fds attached than named");
			} else {
				int32_t rc = start_vpn(v[0], v[1], v[2]);
				reply(ctl, "ok %d", rc);
			}
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
		} else if (sscanf(buf, "stop %d", &h) == 1) {
			reply(ctl, "ok %d", stop_vpn(h));
		} else if (strcmp(buf, "version") == 0) {
			reply(ctl, "ok %s", vpn_version());
		} else if (strcmp(buf, "fds") == 0) {
			char list[4000];
			list_fds(list, sizeof list);
			reply(ctl, "ok %s", list);
		} else if (strcmp(buf, "stats") == 0) {
			reply(ctl, "ok fds=%d rss_kb=%ld hwm_kb=%ld anon_kb=%ld", count_fds(), status_kb("VmRSS"),
			      status_kb("VmHWM"), status_kb("RssAnon"));
		} else if (sscanf(buf, "threads %d %d", &threads, &iters) == 2 && threads > 0 && threads <= 64) {
			pthread_t tid[64];
			struct stress s = {.iters = iters};
			for (int i = 0; i < threads; i++)
				pthread_create(&tid[i], NULL, stress_thread, &s);
			for (int i = 0; i < threads; i++)
				pthread_join(tid[i], NULL);
			reply(ctl, "ok");
		} else if (strcmp(buf, "quit") == 0) {
			reply(ctl, "ok");
			return 0;
		} else {
			reply(ctl, "err unknown command: %s", buf);
		}
	}
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: dlhost LIB serve CTL_FD\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlhost: dlopen %s: %s\n", argv[1], dlerror());
		return 2;
	}
	start_vpn = (start_fn)must_sym(lib, "coderStartVPN");
	stop_vpn = (stop_fn)must_sym(lib, "coderStopVPN");
	vpn_version = (version_fn)must_sym(lib, "coderVPNVersion");
	if (strcmp(argv[2], "serve") == 0 && argc == 4)
		return serve(atoi(argv[3]));
	fprintf(stderr, "dlhost: bad arguments\n");
	return 2;
}
