package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/codervpn/codervpn/internal/linuxnet"
)

// The demo's namespace is named after our pid, so that a later demo can tell
// a namespace left by a demo that was killed (its pid is gone) from one in
// use by a demo still running.
const (
	demoNetnsPrefix = "codervpn-demo-"
	netnsRunDir     = "/run/netns"
	netnsEtcDir     = "/etc/netns"
	ipTimeout       = 10 * time.Second
)

// cleanups is a stack of undo steps, run last-in first-out, each at most
// once, whether the demo succeeded, failed or was interrupted.
type cleanups struct {
	mu    sync.Mutex
	steps []cleanupStep
}

type cleanupStep struct {
	what string
	fn   func() error
}

// add registers fn, which undoes what was just done.
func (c *cleanups) add(what string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps = append(c.steps, cleanupStep{what, fn})
}

// run undoes everything registered so far, newest first, and reports what
// failed. Steps already run are not run again.
func (c *cleanups) run() error {
	var errs []error
	for {
		c.mu.Lock()
		if len(c.steps) == 0 {
			c.mu.Unlock()
			return errors.Join(errs...)
		}
		s := c.steps[len(c.steps)-1]
		c.steps = c.steps[:len(c.steps)-1]
		c.mu.Unlock()
		if err := s.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.what, err))
		}
	}
}

// ipCommand runs `ip args...` and returns its error with what it printed.
func ipCommand(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// createDemoNetns makes the named network namespace (as `ip netns add`
// does: a bind mount under /run/netns) and the directory whose files
// `ip netns exec` mounts over /etc inside it. It registers their removal.
func createDemoNetns(name string, cl *cleanups) (string, error) {
	// A namespace with our own pid in its name can only be a leftover of a
	// killed demo whose pid we reuse.
	_ = deleteDemoNetns(name)
	if err := ipCommand("netns", "add", name); err != nil {
		return "", fmt.Errorf("create network namespace %s: %w", name, err)
	}
	cl.add("delete network namespace "+name, func() error { return deleteDemoNetns(name) })
	if err := os.MkdirAll(filepath.Join(netnsEtcDir, name), 0o755); err != nil {
		return "", fmt.Errorf("create the namespace's resolver directory: %w", err)
	}
	// Loopback up, as programs in a namespace expect.
	if err := ipCommand("-n", name, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return filepath.Join(netnsRunDir, name), nil
}

// deleteDemoNetns removes the namespace and its /etc/netns directory. It is
// idempotent: what is already gone counts as removed.
func deleteDemoNetns(name string) error {
	var errs []error
	if _, err := os.Stat(filepath.Join(netnsRunDir, name)); err == nil {
		if err := ipCommand("netns", "delete", name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(netnsEtcDir, name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkNetnsGone verifies that the namespace and its files were removed.
func checkNetnsGone(name string) error {
	for _, p := range []string{filepath.Join(netnsRunDir, name), filepath.Join(netnsEtcDir, name)} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s still exists", p)
		}
	}
	return nil
}

// sweepStaleNetns removes namespaces of earlier demos that were killed
// before they could clean up (SIGKILL, power loss), and returns their names.
func sweepStaleNetns() []string {
	var removed []string
	for _, dir := range []string{netnsRunDir, netnsEtcDir} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			pidStr, ok := strings.CutPrefix(e.Name(), demoNetnsPrefix)
			if !ok {
				continue
			}
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
				continue
			}
			if deleteDemoNetns(e.Name()) == nil && dir == netnsRunDir {
				removed = append(removed, e.Name())
			}
		}
	}
	return removed
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// nsResolver is the demo's DNSConfigurator: it points the namespace's
// resolver at the tunnel's DNS server by writing /etc/netns/<name>/resolv.conf,
// which `ip netns exec` bind-mounts over /etc/resolv.conf in a private mount
// namespace for the programs it runs. The machine's own /etc/resolv.conf is
// never touched. It also writes an nsswitch.conf whose hosts line is plain
// "files dns", so that a host using nss-resolve or mDNS does not send the
// namespace's lookups elsewhere.
type nsResolver struct {
	dir string

	mu      sync.Mutex
	servers []netip.Addr
}

// SetDNS implements linuxnet.DNSConfigurator.
func (r *nsResolver) SetDNS(_ context.Context, _ linuxnet.Link, s linuxnet.DNSSettings) error {
	var b strings.Builder
	b.WriteString("# written by codervpn demo for this network namespace only\n")
	for i, a := range s.Servers {
		if i == 3 { // the resolver reads at most three
			break
		}
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	b.WriteString("options timeout:2 attempts:2\n")
	if err := os.WriteFile(filepath.Join(r.dir, "resolv.conf"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write the namespace's resolv.conf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "nsswitch.conf"), []byte(nsswitchFilesDNS()), 0o644); err != nil {
		return fmt.Errorf("write the namespace's nsswitch.conf: %w", err)
	}
	r.mu.Lock()
	r.servers = append([]netip.Addr(nil), s.Servers...)
	r.mu.Unlock()
	return nil
}

// nsswitchFilesDNS is the machine's nsswitch.conf with its hosts line
// replaced.
func nsswitchFilesDNS() string {
	orig, _ := os.ReadFile("/etc/nsswitch.conf")
	var out []string
	for _, line := range strings.Split(string(orig), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "hosts:" {
			continue
		}
		out = append(out, line)
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\nhosts: files dns\n"
}

// RevertDNS implements linuxnet.DNSConfigurator.
func (r *nsResolver) RevertDNS(context.Context, linuxnet.Link) error {
	r.mu.Lock()
	r.servers = nil
	r.mu.Unlock()
	var errs []error
	for _, f := range []string{"resolv.conf", "nsswitch.conf"} {
		if err := os.Remove(filepath.Join(r.dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close implements linuxnet.DNSConfigurator.
func (r *nsResolver) Close() error { return nil }

// Servers are the DNS servers written, empty before SetDNS.
func (r *nsResolver) Servers() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]netip.Addr(nil), r.servers...)
}
