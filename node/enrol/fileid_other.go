//go:build !unix

package enrol

import "os"

// fileID: no inode here; a namespace is then never reported gone by its
// identity (its CNI DEL ends it).
func fileID(os.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }
