package agent

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/lanmonitor/lanmonitor/bpf"
)

// readSamples logs every flow sample of the ring buffer as one structured
// line until the reader is closed.
func (d *hostDatapath) readSamples(r *ringbuf.Reader) {
	defer d.wg.Done()
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if !errors.Is(err, ringbuf.ErrClosed) {
				d.log.Error("read flow sample", "error", err)
			}
			return
		}
		s, err := bpf.ReadSample(rec.RawSample)
		if err != nil {
			d.log.Error("decode flow sample", "error", err)
			continue
		}
		d.log.LogAttrs(context.Background(), slog.LevelInfo, "flow sample", sampleAttrs(s)...)
	}
}

// sampleAttrs are the fields of a flow sample's log line.
func sampleAttrs(s bpf.FlowSample) []slog.Attr {
	traffic, verdict := "snooped", "pass"
	if s.Local {
		traffic = "local"
	}
	if s.Dropped {
		verdict = "drop"
	}
	attrs := []slog.Attr{
		slog.String("src", s.Src.String()), slog.String("dst", s.Dst.String()),
		slog.Int("proto", int(s.Protocol)),
		slog.Int("srcPort", int(s.SrcPort)), slog.Int("dstPort", int(s.DstPort)),
		slog.String("traffic", traffic), slog.String("verdict", verdict),
		slog.Int("bytes", int(s.FrameLen)), slog.Bool("fragment", s.Fragment),
	}
	if s.RuleID != 0 {
		attrs = append(attrs, slog.Int("ruleID", int(s.RuleID)))
	}
	return attrs
}
