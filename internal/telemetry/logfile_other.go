//go:build !unix

package telemetry

import "os"

// removed reports whether f's file has no name left; where the link count
// is not known it is taken to have one.
func removed(*os.File) bool { return false }

// lockFile takes no lock where flock is not available.
func lockFile(*os.File, bool) error { return nil }
