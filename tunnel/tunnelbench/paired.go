package tunnelbench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// Paired is the outcome of RunPaired for one stream count: HBONE and the
// mTLS splice measured in alternating blocks, so that both see the same
// machine state. On a shared machine the ratio of neighbouring blocks is
// far steadier than figures of paths measured one after the other (Run).
type Paired struct {
	Streams int       `json:"streams"`
	HBONE   []float64 `json:"hbone_gbps"` // per block, Gbit/s at the backend
	MTLS    []float64 `json:"mtls_gbps"`
	Ratios  []float64 `json:"ratios"` // per block pair: HBONE / mTLS
}

// Median is the median of the block ratios.
func (p Paired) Median() float64 {
	if len(p.Ratios) == 0 {
		return 0
	}
	r := slices.Clone(p.Ratios)
	slices.Sort(r)
	return r[len(r)/2]
}

// RunPaired measures bulk throughput (the workload of Run's throughput
// figures) through the mtls and hbone paths in blocks alternately
// started by either path, blocks pairs for each stream count, each
// transfer lasting block. Both paths live for the whole run, so HBONE's
// pool is warm after the first block.
func RunPaired(ctx context.Context, blocks int, block time.Duration, streams []int, logf func(string, ...any)) ([]Paired, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	e, err := newEnv()
	if err != nil {
		return nil, err
	}
	defer e.backend.close()
	m, err := e.newPath("mtls")
	if err != nil {
		return nil, err
	}
	defer m.Close()
	h, err := e.newPath("hbone")
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []Paired
	for _, n := range streams {
		p := Paired{Streams: n}
		for i := 0; i < blocks; i++ {
			order := []Path{h, m}
			if i%2 == 1 {
				order = []Path{m, h}
			}
			got := map[string]float64{}
			for _, path := range order {
				g, _, err := throughput(ctx, path, e.backend, n, block)
				if err != nil {
					return nil, fmt.Errorf("%s, %d streams: %w", path.Name(), n, err)
				}
				got[path.Name()] = g
			}
			p.HBONE = append(p.HBONE, got["hbone"])
			p.MTLS = append(p.MTLS, got["mtls"])
			p.Ratios = append(p.Ratios, got["hbone"]/got["mtls"])
			logf("paired, %d streams, block %d: hbone %.2f Gbit/s, mtls %.2f Gbit/s, ratio %.2f", n, i, got["hbone"], got["mtls"], got["hbone"]/got["mtls"])
		}
		out = append(out, p)
	}
	return out, nil
}

// PairedTable writes one line per stream count: the median ratio, its
// range and the median throughput of each path.
func PairedTable(w io.Writer, ps []Paired) error {
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	for _, p := range ps {
		if len(p.Ratios) == 0 {
			continue
		}
		if _, err := fmt.Fprintf(w, "throughput %d stream(s), %d paired blocks: hbone/mtls median %.2fx (range %.2f-%.2fx); hbone %.2f Gbit/s, mtls %.2f Gbit/s (medians)\n",
			p.Streams, len(p.Ratios), p.Median(), slices.Min(p.Ratios), slices.Max(p.Ratios), med(p.HBONE), med(p.MTLS)); err != nil {
			return err
		}
	}
	return nil
}
