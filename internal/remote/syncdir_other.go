//go:build !unix

package remote

// syncDir does nothing where directories cannot be opened and synced
// (Windows: its rename is MoveFileEx, which the file system journals).
var syncDir = func(string) error { return nil }
