package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/codervpn/codervpn/internal/abi"
	"github.com/codervpn/codervpn/internal/hostlog"
)

// The log callback gets the library's local records, from before a session
// exists (a failed handshake) to why it ended, redacted, at the level the
// host chose; a bad level changes nothing; turning it off means the
// callback has returned for good.
func TestLogCallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	w := newWorld(ctx, t)
	host := startDLHost(t)
	debug := host.setLogger(hostlog.LevelDebug, false)

	for _, bad := range []int32{-1, hostlog.LevelFatal + 1} {
		wr, _ := newLogPipe(t)
		rc, err := host.h.SetLogger(bad, wr, false)
		wr.Close()
		if err != nil || rc != abi.CodeBadLogLevel {
			t.Fatalf("coderSetLogger(level %d) = %d, %v; want %d", bad, rc, err, abi.CodeBadLogLevel)
		}
	}

	// A manager that sends garbage instead of its handshake line: the
	// tunnel ends before any session, and only the callback hears why.
	garbageHandshake(t, host)
	debug.waitLine(t, hostlog.LevelError, "vpn: the CoderVPN handshake with the manager failed")

	s := open(ctx, t, host, w)
	s.get(ctx, t, w)
	s.close(ctx, t, host)
	lines := debug.wait(t, "the end of the session", func(lines []string, _ bool) bool {
		return strings.Contains(strings.Join(lines, "\n"), "1 vpn: the CoderVPN session ended")
	})
	text := strings.Join(lines, "\n")
	for _, want := range []string{"1 vpn: the tunnel is running", "1 vpn: the tunnel stopped", "0 vpn.net"} {
		if !strings.Contains(text, "\n"+want) {
			t.Errorf("the callback never got a line starting %q", want)
		}
	}
	if strings.Contains(text, w.d.Token) {
		t.Error("the API token appears in the records the callback got")
	}
	noViolations(t, lines)

	// A new callback at WARN: the old one has returned for good (the host
	// closes its pipe once coderSetLogger returns), and info records are
	// filtered: the one logged before the error never arrives before it.
	warn := host.setLogger(hostlog.LevelWarn, false)
	debug.wait(t, "end of file after it was replaced", func(_ []string, eof bool) bool { return eof })
	rd, wr := pipeFiles(t)
	if h := host.start(-1, rd, wr); h < 0 || host.stop(h) != 0 {
		t.Fatalf("start and stop before the handshake: handle %d", h)
	}
	garbageHandshake(t, host)
	lines = warn.wait(t, "the handshake failure", func(lines []string, _ bool) bool { return len(lines) > 0 })
	if !strings.HasPrefix(lines[0], fmt.Sprintf("%d vpn: the CoderVPN handshake with the manager failed", hostlog.LevelError)) {
		t.Fatalf("at WARN the first record was %q, want the handshake failure (the info record before it filtered)", lines[0])
	}

	if rc, err := host.h.LoggerOff(); err != nil || rc != 0 {
		t.Fatalf("coderSetLogger(NULL) = %d, %v", rc, err)
	}
	warn.wait(t, "end of file after it was turned off", func(_ []string, eof bool) bool { return eof })
}

// garbageHandshake starts a tunnel whose manager writes a bad header line,
// and stops it once the tunnel has given up on it.
func garbageHandshake(t *testing.T, host *dlHost) {
	t.Helper()
	tunR, mgrW := pipeFiles(t)
	mgrR, tunW := pipeFiles(t)
	h := host.start(-1, tunR, tunW)
	if h < 0 {
		t.Fatalf("coderStartVPN = %d", h)
	}
	tunW.Close() // the host's copy: EOF on mgrR comes once the tunnel lets go
	if _, err := mgrW.WriteString("codervpn nonsense 9.9\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(mgrR); err != nil {
		t.Fatal(err)
	}
	if rc := host.stop(h); rc != 0 {
		t.Fatalf("coderStopVPN = %d", rc)
	}
}

func readAll(f *os.File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// A callback that does not return holds up nothing: a tunnel starts,
// carries traffic and stops, and thousands of records are logged at once;
// what did not fit the queue is dropped, counted, and reported once the
// callback returns: every record is either delivered, in order, or counted.
func TestLogCallbackNeverBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	lib := testExportsLib(t)
	w := newWorld(ctx, t)
	host := startDLHostWith(t, lib)

	held := host.setLogger(hostlog.LevelDebug, true)
	s := open(ctx, t, host, w)
	s.get(ctx, t, w)
	s.close(ctx, t, host)
	if err := host.h.ReleaseLogger(); err != nil {
		t.Fatal(err)
	}
	// What fitted the queue arrives now (the rest was dropped: the engine
	// logs a lot at debug level).
	noViolations(t, held.wait(t, "the session's records", func(lines []string, _ bool) bool { return len(lines) > 0 }))

	// Exact accounting with nothing else logging: n records at once.
	lines := host.setLogger(hostlog.LevelDebug, true)
	const n = 5000
	took := timed(func() {
		if err := host.h.TestLog(n); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("coderTestLog(%d) returned after %s with the callback held", n, took)
	if err := host.h.ReleaseLogger(); err != nil {
		t.Fatal(err)
	}
	record := regexp.MustCompile(`^1 test record i=(\d+)$`)
	note := regexp.MustCompile(`^2 codervpn: (\d+) log records were dropped because the log callback did not keep up`)
	// The delivered records are in order but not always the first ones: the
	// queue holds QueueRecords, and the slot the callback's first record
	// frees may be taken by a later record when the callback thread is slow
	// to start (a loaded machine): 0…1023, then 1215.
	var delivered, dropped int
	count := func(got []string, _ bool) bool {
		delivered, dropped = 0, 0
		last := -1
		for _, l := range got {
			if m := record.FindStringSubmatch(l); m != nil {
				i, _ := strconv.Atoi(m[1])
				if i <= last || (delivered < hostlog.QueueRecords && i != delivered) {
					t.Fatalf("delivered record %d arrived as %q after i=%d: the first %d must arrive first, and all in order",
						delivered, l, last, hostlog.QueueRecords)
				}
				last = i
				delivered++
			} else if m := note.FindStringSubmatch(l); m != nil {
				k, _ := strconv.Atoi(m[1])
				dropped += k
			}
		}
		return delivered+dropped >= n
	}
	got := lines.wait(t, fmt.Sprintf("%d records, delivered or counted", n), count)
	t.Logf("%d records delivered, %d dropped and reported", delivered, dropped)
	if delivered+dropped != n || dropped == 0 || delivered > hostlog.QueueRecords+1 {
		t.Fatalf("%d delivered + %d dropped, want %d with at most %d delivered", delivered, dropped, n, hostlog.QueueRecords+1)
	}
	noViolations(t, got)
}
