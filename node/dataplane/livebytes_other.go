//go:build !linux

package dataplane

// liveBytes needs Linux's TCP_INFO: elsewhere bytes are counted at the end.
func liveBytes(any) func() (int64, int64) { return nil }
