// Package manager is the host's side of a CoderVPN session: the part Coder
// Desktop, the macOS NetworkExtension, our CLI and the tests' hosttest play
// (see package speaker for the protocol itself). A host makes the tunnel's
// pipes, starts the tunnel on the other ends, and then:
//
//	sess, err := manager.Connect(ctx, r, w, manager.Config{
//		Settings:     applier,            // applies each NetworkSettingsRequest
//		OnLog:        func(l *vpnpb.Log) { ... },
//		OnPeerUpdate: func(u *vpnpb.PeerUpdate) { peers.Apply(u) },
//	})
//	resp, err := sess.Start(ctx, &vpnpb.StartRequest{CoderUrl: u, ApiToken: tok})
//	...
//	sess.Stop(ctx)   // the tunnel answers, then closes its side
//	sess.Close()
//
// What the tunnel sends is handled on one worker goroutine in the order it
// was sent: each NetworkSettingsRequest goes to the SettingsApplier, one at
// a time, and its error (or success) is the reply; Log and PeerUpdate
// messages go to the callbacks. A reply to the host's own request is
// returned once everything sent before it was handled, so when Start
// returns, the settings the Start needed are applied.
//
// Peers is the picture of workspaces and agents that the one-way
// PeerUpdates add up to, for the host to keep (status tables, tests).
//
// The package links the protocol (speaker, proto) and the standard library,
// not the tunnel's network engine.
package manager
