package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// perfCounting reports whether the latency rows count each process's
// system calls with perf (CODERVPN_BENCH_PERF=1): the kernel's count of
// every thread's syscall entries, which /proc does not keep for sockets.
func perfCounting() bool { return os.Getenv("CODERVPN_BENCH_PERF") == "1" }

// perfStat is one running `perf stat` attached to a process.
type perfStat struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startPerfStat counts pid's system calls (all its threads) until stop.
func startPerfStat(pid int) (*perfStat, error) {
	p := &perfStat{}
	p.cmd = exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid))
	p.cmd.Stderr = &p.out // perf stat writes its counts to stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat -p %d: %w", pid, err)
	}
	return p, nil
}

// stop ends the count and returns it.
func (p *perfStat) stop() (int64, error) {
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return 0, fmt.Errorf("stop perf stat: %w", err)
	}
	_ = p.cmd.Wait() // perf exits non-zero on SIGINT; the counts are written
	for _, line := range strings.Split(p.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) >= 3 && f[2] == "raw_syscalls:sys_enter" {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("perf stat count %q: %w", f[0], err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("perf stat printed no count: %q", p.out.String())
}
