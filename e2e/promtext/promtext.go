// Package promtext reads samples out of Prometheus text exposition, as the
// end-to-end tests and the cluster demo scrape it from the node daemons.
package promtext

import (
	"strconv"
	"strings"
)

// Samples returns the sample lines of metric name whose labels include every
// pair of want (exact label values), and the sum of their values. Comment
// lines and other metrics are skipped; a line whose value does not parse is
// not counted.
func Samples(text, name string, want map[string]string) ([]string, float64) {
	var lines []string
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(l, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
			lines = append(lines, l)
		}
	}
	return lines, sum
}
