package vpntest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/codervpn/codervpn/internal/fdtest"
	"github.com/codervpn/codervpn/vpnlib/vpntest"
)

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
	// Warm up once: the runtime and the HTTP client create some fds and
	// goroutines lazily (netpoller, DNS config) that rightly outlive us.
	lifecycle(testCtx(t), t, vpntest.Options{})

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
			ctx := testCtx(t)
			before := goleak.IgnoreCurrent()
			fds := fdtest.Take(t)
			took := lifecycle(ctx, t, tc.opts)
			t.Logf("Start took %v", took)
			// Goroutines exit, and the client's idle keep-alive connections
			// notice the server hung up, on their own time: wait for both.
			var leaked error
			waitFor(testCtx(t), t, "the goroutines to exit", func() bool { leaked = goleak.Find(before); return leaked == nil },
				func() string { return fmt.Sprint(leaked) })
			fds.WaitClosed(t, nil, testTimeout, "the deployment and its client")
		})
	}
}
