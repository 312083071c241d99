// Package nstest holds test helpers for privileged tests of capture and
// the data path (redirect, node/dataplane): fresh network namespaces, bpffs
// mounts and packet captures that clean up after the test. It ships as an
// importable package, like wireguard-go's tuntest, so every privileged
// tier builds its lab from the same pieces.
//
// The helpers are Linux-only; on other platforms the package is empty.
package nstest
