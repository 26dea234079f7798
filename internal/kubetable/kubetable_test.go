package kubetable

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	out := `NAME   NODES   INTERFACE   TOP TALKER    RATE         AGE
lan    3/3     lan0        198.18.0.21   8.3 Mbit/s   36s
quiet                                                 2s

NAME          CIDRS   MODE
other-table   x       y
`
	want := []map[string]string{
		{"NAME": "lan", "NODES": "3/3", "INTERFACE": "lan0", "TOP TALKER": "198.18.0.21", "RATE": "8.3 Mbit/s", "AGE": "36s"},
		{"NAME": "quiet", "NODES": "", "INTERFACE": "", "TOP TALKER": "", "RATE": "", "AGE": "2s"},
	}
	if got := Parse(out); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if got := Parse(""); got != nil {
		t.Fatalf("empty output: %v", got)
	}
}
