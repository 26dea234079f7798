// Package kubetable reads the human-readable tables `kubectl get` prints,
// so that end-to-end tests can check exactly what a user sees (the printer
// columns of the CRDs).
package kubetable

import "strings"

// Parse returns the rows of kubectl's table output as maps from column
// header to cell. A column starts where its header word starts (headers are
// separated by at least two spaces; "TOP TALKER" is one header). Blank lines
// between the tables of several resources end a table: only the first is
// parsed.
func Parse(out string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return nil
	}
	header := lines[0]
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ' && (i < 2 || header[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	names := make([]string, len(starts))
	for j, st := range starts {
		end := len(header)
		if j+1 < len(starts) {
			end = starts[j+1]
		}
		names[j] = strings.TrimSpace(header[st:end])
	}
	var rows []map[string]string
	for _, line := range lines[1:] {
		if strings.TrimSpace(line) == "" {
			break
		}
		row := map[string]string{}
		for j, st := range starts {
			end := len(line)
			if j+1 < len(starts) && starts[j+1] < end {
				end = starts[j+1]
			}
			row[names[j]] = ""
			if st < end {
				row[names[j]] = strings.TrimSpace(line[st:end])
			}
		}
		rows = append(rows, row)
	}
	return rows
}
