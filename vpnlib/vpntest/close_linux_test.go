package vpntest_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// lifecycle starts a deployment with a workspace and an agent, connects a
// Coder client, fetches the agent's page, then closes the client and the
// deployment. It returns how long Start took.
func lifecycle(ctx context.Context, t *testing.T, opts vpntest.Options) time.Duration {
	t.Helper()
	start := time.Now()
	d, err := vpntest.Start(ctx, opts)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	a, err := d.AddRunningAgent(ctx, "dev", "main")
	if err != nil {
		t.Fatal(err)
	}
	c := newCoderClient(ctx, t, d)
	c.waitForAgent(ctx, t, a.ID)
	c.waitHello(ctx, t, a)
	c.close()
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("agent close after deployment close: %v", err)
	}
	return took
}

// TestCloseReleasesEverything: after Close (and the client's close) no
// goroutine and no file descriptor is left over, in every mode.
func TestCloseReleasesEverything(t *testing.T) {
	ctx := testCtx(t)
	// Warm up once: the runtime and the HTTP client create some fds and
	// goroutines lazily (netpoller, DNS config) that rightly outlive us.
	lifecycle(ctx, t, vpntest.Options{})

	cases := []struct {
		name string
		opts vpntest.Options
	}{
		{"direct", vpntest.Options{}},
		{"DERP only", vpntest.Options{BlockDirect: true}},
		{"DERP websockets", vpntest.Options{BlockDirect: true, DERPForceWebSockets: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			fds := openFDs(t)
			took := lifecycle(ctx, t, tc.opts)
			t.Logf("Start took %v", took)
			if err := goleak.Find(before); err != nil {
				t.Fatalf("goroutines left after Close: %v", err)
			}
			// The client's idle keep-alive connections notice the server
			// hung up asynchronously; wait for them, then compare.
			waitFor(ctx, t, "fds to return to the baseline", func() bool { return openFDs(t) <= fds },
				func() string { return "open fds: " + strconv.Itoa(openFDs(t)) + ", before: " + strconv.Itoa(fds) })
		})
	}
}
