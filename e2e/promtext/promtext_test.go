package promtext

import "testing"

func TestSamples(t *testing.T) {
	text := `# HELP ambit_x help
# TYPE ambit_x counter
ambit_x{a="1",b="2"} 3
ambit_x{a="1",b="3"} 4
ambit_xy{a="1"} 100
ambit_x{a="2"} 5
ambit_y 7
ambit_x{a="1"} notanumber
`
	for _, c := range []struct {
		name  string
		want  map[string]string
		lines int
		sum   float64
	}{
		{"ambit_x", nil, 3, 12},
		{"ambit_x", map[string]string{"a": "1"}, 2, 7},
		{"ambit_x", map[string]string{"a": "1", "b": "3"}, 1, 4},
		{"ambit_x", map[string]string{"a": "9"}, 0, 0},
		{"ambit_y", nil, 1, 7},
		{"ambit_z", nil, 0, 0},
	} {
		lines, sum := Samples(text, c.name, c.want)
		if len(lines) != c.lines || sum != c.sum {
			t.Errorf("Samples(%s, %v) = %d lines, sum %v; want %d, %v", c.name, c.want, len(lines), sum, c.lines, c.sum)
		}
	}
}
