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
 *         memlimit B    coderSetMemoryLimit(B). Reply: "ok RC".
 *         logger L fd [hold]
 *                       coderSetLogger with a callback that writes each record
 *                       to the attached fd as a line "LEVEL MESSAGE" (newlines
 *                       in MESSAGE escaped), at min_level L. With "hold", every
 *                       call of this callback (not of the one it replaces)
 *                       waits until "logger release". A call that overlaps
 *                       another writes a line "VIOLATION ...". Reply: "ok RC".
 *         logger release
 *                       Lets held callbacks return. Reply: "ok".
 *         logger off    coderSetLogger(NULL, NULL, 0). Reply: "ok RC".
 *         crashout fd   coderSetCrashOutput(the attached fd), then closes it.
 *         crashout N    coderSetCrashOutput(N). Reply: "ok RC".
 *         testlog N     coderTestLog(N) (a library built with the
 *                       codervpn_testexports tag). Reply: "ok".
 *         testcrash     coderTestCrash(): the process dies. Reply: "ok".
 *         quit          Reply "ok", exit 0.
 *       End of file on CTL_FD (the parent is gone) also exits 0.
 *
 * It includes codervpn.h for the function types and constants only, as a
 * dlopen host does (CODERVPN_NO_PROTOTYPES). The functions added after the
 * first three are looked up when used, so it still loads an older library.
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

#define CODERVPN_NO_PROTOTYPES
#include "codervpn.h"

static void *lib;
static coderStartVPN_fn start_vpn;
static coderStopVPN_fn stop_vpn;
static coderVPNVersion_fn vpn_version;

/* The log callback's state: where records go, the hold, overlap detection.
 * The hold names the fd of the callback it holds (-1: none): a callback
 * being replaced may still be delivering its queue, and coderSetLogger
 * waits for it, so a hold meant for the new callback must not catch the
 * old one (that deadlocked the test under load). */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int held_fd;
	int fd;
	int inside;
} logcb = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, -1, 0};

static void write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return; /* the test stopped reading: nothing to report to */
		p += w;
		n -= (size_t)w;
	}
}

static void log_callback(void *context, int32_t level, const char *message) {
	int fd = (int)(intptr_t)context;
	pthread_mutex_lock(&logcb.mu);
	if (logcb.inside++ > 0) {
		static const char overlap[] = "VIOLATION the callback was entered while running\n";
		write_all(fd, overlap, sizeof overlap - 1);
	}
	while (logcb.held_fd == fd)
		pthread_cond_wait(&logcb.cond, &logcb.mu);
	pthread_mutex_unlock(&logcb.mu);

	size_t n = strlen(message);
	char *line = malloc(2 * n + 16);
	if (line == NULL)
		abort();
	int k = snprintf(line, 16, "%d ", (int)level);
	for (size_t i = 0; i < n; i++) {
		if (message[i] == '\n') {
			line[k++] = '\\';
			line[k++] = 'n';
		} else
			line[k++] = message[i];
	}
	line[k++] = '\n';
	write_all(fd, line, (size_t)k);
	free(line);

	pthread_mutex_lock(&logcb.mu);
	logcb.inside--;
	pthread_mutex_unlock(&logcb.mu);
}

/* opt_sym looks up a function added after the first three; NULL if the
 * library predates it. */
static void *opt_sym(const char *name) { return dlsym(lib, name); }

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

/* serve_logger runs "logger ..." (args is what follows the word). */
static void serve_logger(int ctl, const char *args, int *fds, int nfds) {
	coderSetLogger_fn set = (coderSetLogger_fn)opt_sym("coderSetLogger");
	int level;
	char mode[32] = "";
	if (set == NULL) {
		reply(ctl, "err the library has no coderSetLogger");
	} else if (strcmp(args, "release") == 0) {
		pthread_mutex_lock(&logcb.mu);
		logcb.held_fd = -1;
		pthread_cond_broadcast(&logcb.cond);
		pthread_mutex_unlock(&logcb.mu);
		reply(ctl, "ok");
	} else if (strcmp(args, "off") == 0) {
		int32_t rc = set(NULL, NULL, 0);
		/* The library promises the callback has returned for good. */
		if (logcb.fd >= 0)
			close(logcb.fd);
		logcb.fd = -1;
		reply(ctl, "ok %d", rc);
	} else if (sscanf(args, "%d fd %31s", &level, mode) >= 1 && nfds == 1) {
		pthread_mutex_lock(&logcb.mu);
		logcb.held_fd = strcmp(mode, "hold") == 0 ? fds[0] : -1;
		pthread_mutex_unlock(&logcb.mu);
		int old = logcb.fd;
		int32_t rc = set((void *)(intptr_t)fds[0], log_callback, (int32_t)level);
		if (rc == 0) {
			logcb.fd = fds[0];
			if (old >= 0)
				close(old); /* the old callback has returned for good */
		} else {
			close(fds[0]);
		}
		reply(ctl, "ok %d", rc);
		return;
	} else {
		reply(ctl, "err usage: logger L fd [hold] | logger release | logger off");
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
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
		} else if (sscanf(buf, "memlimit %31s", a[0]) == 1) {
			coderSetMemoryLimit_fn f = (coderSetMemoryLimit_fn)opt_sym("coderSetMemoryLimit");
			if (f == NULL)
				reply(ctl, "err the library has no coderSetMemoryLimit");
			else
				reply(ctl, "ok %lld", (long long)f((int64_t)strtoll(a[0], NULL, 10)));
		} else if (strncmp(buf, "logger ", 7) == 0) {
			serve_logger(ctl, buf + 7, fds, nfds);
		} else if (sscanf(buf, "crashout %31s", a[0]) == 1) {
			coderSetCrashOutput_fn f = (coderSetCrashOutput_fn)opt_sym("coderSetCrashOutput");
			int32_t fd = strcmp(a[0], "fd") == 0 && nfds == 1 ? fds[0] : (int32_t)strtol(a[0], NULL, 10);
			if (f == NULL)
				reply(ctl, "err the library has no coderSetCrashOutput");
			else
				reply(ctl, "ok %d", f(fd));
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
		} else if (sscanf(buf, "testlog %d", &iters) == 1) {
			void (*f)(int32_t) = (void (*)(int32_t))opt_sym("coderTestLog");
			if (f == NULL) {
				reply(ctl, "err the library has no coderTestLog (build it with -tags codervpn_testexports)");
			} else {
				f(iters);
				reply(ctl, "ok");
			}
		} else if (strcmp(buf, "testcrash") == 0) {
			void (*f)(void) = (void (*)(void))opt_sym("coderTestCrash");
			if (f == NULL) {
				reply(ctl, "err the library has no coderTestCrash (build it with -tags codervpn_testexports)");
			} else {
				f();
				reply(ctl, "ok");
			}
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
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlhost: dlopen %s: %s\n", argv[1], dlerror());
		return 2;
	}
	start_vpn = (coderStartVPN_fn)must_sym(lib, "coderStartVPN");
	stop_vpn = (coderStopVPN_fn)must_sym(lib, "coderStopVPN");
	vpn_version = (coderVPNVersion_fn)must_sym(lib, "coderVPNVersion");
	if (strcmp(argv[2], "serve") == 0 && argc == 4)
		return serve(atoi(argv[3]));
	fprintf(stderr, "dlhost: bad arguments\n");
	return 2;
}
