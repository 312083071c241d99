package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ErrMissingFeature is wrapped by CheckFeatures when the kernel lacks
// something the capture needs.
var ErrMissingFeature = errors.New("kernel lacks a feature ambit's capture needs")

type feature struct {
	name   string
	kernel string // first mainline version that has it
	probe  func() error
}

var needed = []feature{
	{"BPF_PROG_TYPE_SK_LOOKUP", "5.9", func() error { return features.HaveProgramType(ebpf.SkLookup) }},
	{"bpf_sk_assign in sk_lookup", "5.9", func() error { return features.HaveProgramHelper(ebpf.SkLookup, asm.FnSkAssign) }},
	{"BPF_PROG_TYPE_CGROUP_SOCK_ADDR", "4.17", func() error { return features.HaveProgramType(ebpf.CGroupSockAddr) }},
	{"bpf_get_netns_cookie in cgroup sock_addr", "5.7", func() error {
		return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetNetnsCookie)
	}},
	{"bpf_sk_storage_get in cgroup sock_addr", "5.10", func() error {
		return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSkStorageGet)
	}},
	{"BPF_PROG_TYPE_SOCK_OPS", "4.13", func() error { return features.HaveProgramType(ebpf.SockOps) }},
	{"BPF_MAP_TYPE_SK_STORAGE", "5.2", func() error { return features.HaveMapType(ebpf.SkStorage) }},
	{"BPF_MAP_TYPE_SOCKMAP", "4.14", func() error { return features.HaveMapType(ebpf.SockMap) }},
	{"BPF_MAP_TYPE_LRU_HASH", "4.10", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"bounded loops", "5.3", features.HaveBoundedLoops},
	{"BPF_PROG_TYPE_SCHED_CLS", "4.1", func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
	{"bpf_sk_storage_delete in cgroup sock_addr", "5.10", func() error {
		return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSkStorageDelete)
	}},
}

// CheckFeatures probes the running kernel for everything the capture uses. The error names the first
// missing feature, the kernel version that introduced it and the running
// kernel.
func CheckFeatures() error {
	for _, f := range needed {
		err := f.probe()
		if err == nil {
			continue
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("%w: %s (needs Linux >= %s, running %s)", ErrMissingFeature, f.name, f.kernel, kernelRelease())
		}
		return fmt.Errorf("bpf: probing %s: %w", f.name, err)
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
