//go:build unix

package enrol

import (
	"os"
	"syscall"
)

// fileID is the (device, inode) of a file.
func fileID(fi os.FileInfo) (dev, ino uint64, ok bool) {
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Dev), uint64(sys.Ino), true
	}
	return 0, 0, false
}
