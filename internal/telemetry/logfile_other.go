//go:build !unix

package telemetry

import "os"

// openNonblock: no such flag to give where there are no FIFOs to wait on.
const openNonblock = 0

// noReader: no FIFOs here.
func noReader(error) bool { return false }

// removed reports whether f's file has no name left; where the link count
// is not known it is taken to have one.
func removed(*os.File) bool { return false }
