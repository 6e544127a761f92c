// Package loadgen is the performance validation toolkit's measuring side:
// the closed-loop (users) and open-loop (constant rate) HTTP drivers, HDR
// latency statistics, plots and SLO evaluation, on the workload model of
// internal/workload.
//
// It talks to the service only over HTTP and must not import the service's
// packages: what it measures has to be what a client sees, and it has to work
// against any build (or a stock OPA) listening on an address.
package loadgen
