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
	cmd    *exec.Cmd
	out    bytes.Buffer
	waited bool
}

// kill ends a perf stat that stop did not (a measurement that failed).
func (p *perfStat) kill() {
	if p.waited {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.waited = true
}

// perfEvents are what perfStat counts: every system call, and the two
// that read a packet from the tunnel's fd (ours: recvfrom; Coder's device:
// read through its os.File), which little else in either process makes
// while it only carries round trips.
var perfEvents = []string{"raw_syscalls:sys_enter", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_read"}

// perfCounts is what one perfStat counted.
type perfCounts struct {
	syscalls, reads int64 // reads: recvfrom + read
}

// startPerfStat counts pid's system calls (all its threads) until stop.
func startPerfStat(pid int) (*perfStat, error) {
	p := &perfStat{}
	p.cmd = exec.Command("perf", "stat", "-x,", "-e", strings.Join(perfEvents, ","), "-p", strconv.Itoa(pid))
	p.cmd.Stderr = &p.out // perf stat writes its counts to stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat -p %d: %w", pid, err)
	}
	return p, nil
}

// stop ends the count and returns it.
func (p *perfStat) stop() (perfCounts, error) {
	var c perfCounts
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return c, fmt.Errorf("stop perf stat: %w", err)
	}
	_ = p.cmd.Wait() // perf exits non-zero on SIGINT; the counts are written
	p.waited = true
	seen := 0
	for _, line := range strings.Split(p.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		dst := &c.reads
		switch f[2] {
		case perfEvents[0]:
			dst = &c.syscalls
		case perfEvents[1], perfEvents[2]:
		default:
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return c, fmt.Errorf("perf stat count %q of %s: %w", f[0], f[2], err)
		}
		*dst += n
		seen++
	}
	if seen != len(perfEvents) {
		return c, fmt.Errorf("perf stat printed %d of %d counts: %q", seen, len(perfEvents), p.out.String())
	}
	return c, nil
}
