//go:build unix

package remote

import "os"

// syncDir fsyncs directory dir, so that the entries renamed or created in
// it outlive a power loss (a synced file's rename is in its directory).
// A variable for tests.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
