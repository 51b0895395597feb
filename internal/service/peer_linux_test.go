package service

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/codervpn/codervpn/internal/dbustest"
)

func TestPeerOfIsUs(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "p.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := PeerOf(s)
	if err != nil {
		t.Fatal(err)
	}
	groups, _ := os.Getgroups()
	if p.PID != os.Getpid() || p.UID != os.Getuid() || p.GID != os.Getgid() {
		t.Fatalf("PeerOf = %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Getuid(), os.Getgid())
	}
	for _, g := range groups {
		if !slices.Contains(p.Groups, g) {
			t.Fatalf("PeerOf groups %v lack our group %d (%v)", p.Groups, g, groups)
		}
	}
}

func TestPeerAllowed(t *testing.T) {
	t.Parallel()
	g := Group{Name: "codervpn", GID: 900}
	tests := []struct {
		name string
		peer Peer
		want bool
	}{
		{name: "root", peer: Peer{UID: 0, GID: 0}, want: true},
		{name: "primary group", peer: Peer{UID: 1000, GID: 900}, want: true},
		{name: "supplementary group", peer: Peer{UID: 1000, GID: 1000, Groups: []int{27, 900}}, want: true},
		{name: "outsider", peer: Peer{UID: 1000, GID: 1000, Groups: []int{27}}},
		{name: "outsider without groups", peer: Peer{UID: 1001, GID: 1001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.peer.Allowed(g); got != tt.want {
				t.Fatalf("Allowed(%+v) = %v, want %v", tt.peer, got, tt.want)
			}
		})
	}
}

// TestWatchResume: logind's PrepareForSleep(false) on a private bus leads
// to one resume; PrepareForSleep(true) (going to sleep) to none.
func TestWatchResume(t *testing.T) {
	t.Parallel()
	addr := dbustest.Start(t)
	watcher := dbustest.Connect(t, addr)
	emitter := dbustest.Connect(t, addr)
	resumed := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	watching := make(chan error, 1)
	go func() { watching <- WatchResume(ctx, watcher, func() { resumed <- struct{}{} }) }()
	defer func() {
		cancel()
		if err := <-watching; err != nil {
			t.Error(err)
		}
	}()
	// The match rule is in place once the bus has it; emit until the
	// first resume arrives, then check the count.
	emit := func(sleeping bool) {
		if err := emitter.Emit(dbus.ObjectPath(login1Path), login1Interface+"."+prepareForSleep, sleeping); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(testTimeout)
	for got := false; !got; {
		emit(true)
		emit(false)
		select {
		case <-resumed:
			got = true
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no resume after PrepareForSleep(false)")
		}
	}
	// Drain what the retries produced, then: going to sleep is no resume.
	for len(resumed) > 0 {
		<-resumed
	}
	emit(true)
	emit(false)
	select {
	case <-resumed:
	case <-deadline:
		t.Fatal("no resume after the second PrepareForSleep(false)")
	}
}
