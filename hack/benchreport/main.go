// Command benchreport turns `go test -bench` output (read from stdin, several
// -count runs) into the markdown tables of docs/benchmarks.md: the median of
// every metric per benchmark and, for BenchmarkXDP, each program's cost as a
// ratio of the floor (a program that only returns XDP_PASS) and of the
// Aya-style comparison design, both measured in the same run.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/perf/benchfmt"
)

func main() {
	if err := report(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// medians maps benchmark name (without the -GOMAXPROCS suffix) -> unit ->
// median value over the runs.
type medians map[string]map[string]float64

func read(r io.Reader) (medians, []string, map[string]string, error) {
	values := map[string]map[string][]float64{}
	var order []string
	config := map[string]string{}
	br := benchfmt.NewReader(r, "stdin")
	for br.Scan() {
		res, ok := br.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		for _, c := range res.Config {
			if c.File {
				config[c.Key] = string(c.Value)
			}
		}
		name := strings.TrimPrefix(res.Name.String(), "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 && !strings.Contains(name[i:], "/") {
			name = name[:i]
		}
		if values[name] == nil {
			values[name] = map[string][]float64{}
			order = append(order, name)
		}
		for _, v := range res.Values {
			unit, val := v.Unit, v.Value
			if v.OrigUnit != "" { // keep the units as the benchmarks wrote them
				unit, val = v.OrigUnit, v.OrigValue
			}
			values[name][unit] = append(values[name][unit], val)
		}
	}
	if err := br.Err(); err != nil {
		return nil, nil, nil, err
	}
	m := medians{}
	for name, units := range values {
		m[name] = map[string]float64{}
		for unit, vs := range units {
			slices.Sort(vs)
			m[name][unit] = vs[len(vs)/2]
			if len(vs)%2 == 0 {
				m[name][unit] = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
			}
		}
	}
	return m, order, config, nil
}

func report(r io.Reader, w io.Writer) error {
	m, order, config, err := read(r)
	if err != nil {
		return err
	}
	if len(order) == 0 {
		return fmt.Errorf("no benchmark results on stdin")
	}
	keys := make([]string, 0, len(config))
	for k := range config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "- %s: %s\n", k, config[k])
	}
	fmt.Fprintln(w)

	const unit = "kernel-ns/pkt"
	var xdp, rest []string
	for _, name := range order {
		if strings.HasPrefix(name, "XDP/") {
			xdp = append(xdp, name)
		} else {
			rest = append(rest, name)
		}
	}
	if len(xdp) > 0 {
		fmt.Fprintf(w, "| benchmark | %s | wall-ns/pkt | x floor | comparison / this |\n|---|---:|---:|---:|---:|\n", unit)
		for _, name := range xdp {
			frame := name[strings.LastIndex(name, "/")+1:]
			v := m[name][unit]
			floor := m["XDP/floor/"+frame][unit]
			aya := m["XDP/aya-hash/sources=1k/"+frame][unit]
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %s | %s |\n", strings.TrimPrefix(name, "XDP/"), v, m[name]["wall-ns/pkt"], ratio(v, floor), ratio(aya, v))
		}
		fmt.Fprintln(w)
	}
	if len(rest) > 0 {
		fmt.Fprintln(w, "| benchmark | metric | median |\n|---|---|---:|")
		for _, name := range rest {
			units := make([]string, 0, len(m[name]))
			for u := range m[name] {
				units = append(units, u)
			}
			sort.Strings(units)
			for _, u := range units {
				fmt.Fprintf(w, "| %s | %s | %.4g |\n", name, u, m[name][u])
			}
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
