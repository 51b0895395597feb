// Package bench measures codervpn against baselines run side by side in the
// same run, and prints one table: our tunnel against Coder's own (the pinned
// module's vpn.NewTunnel, run by bench/internal/codertunnel in a process of
// its own, so that CPU, context switches and memory are per process),
// throughput and latency through the tunnel against the same engine without
// a tunnel device and against plain wireguard-go, start-up times, the memory
// and idle cost of the C library in a C host, and scale. `make bench` runs
// it; bench/RESULTS.md records runs.
//
// Everything is a benchmark run once (-benchtime 1x) doing a fixed amount of
// work, because each measurement needs a deployment, agents and a tunnel
// that are far costlier to set up than to measure. Figures are reported as
// ratios to their baseline measured moments apart on the same CPU, never
// asserted: the machine decides the absolute numbers.
package bench
