// Package frames builds Ethernet frames with gopacket for tests, benchmarks
// and the lab traffic generator: IPv4 and IPv6, VLAN tags, IPv4 options, IPv6
// extension headers, fragments, TCP, UDP, ICMP and ICMPv6. Deliberately
// broken frames are made by building a good one and editing its bytes.
package frames

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Default MAC addresses (locally administered) for frames that name none.
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	DefaultDstMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	BroadcastMAC  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// IPv6 extension header types (RFC 8200).
const (
	ExtHopByHop    = 0
	ExtRouting     = 43
	ExtFragment    = 44
	ExtDestination = 60
)

// Ext is one IPv6 extension header.
type Ext struct {
	// Type is ExtHopByHop, ExtRouting, ExtDestination or ExtFragment.
	Type uint8
	// Len is the header length in bytes, a multiple of 8 (at least 8);
	// ignored for fragment headers (always 8 bytes).
	Len int
	// FragOffset (8-byte units) and More describe a fragment header.
	FragOffset uint16
	More       bool
}

// Spec describes a frame. Zero fields take defaults: MACs DefaultSrcMAC and
// DefaultDstMAC, ports 0, no payload.
type Spec struct {
	SrcMAC, DstMAC net.HardwareAddr
	// Tags are the VLAN TPIDs from the outermost, e.g. 0x88a8 then 0x8100
	// for QinQ; each tag gets VLAN ID 100+i.
	Tags []layers.EthernetType
	// Src and Dst pick the family: both IPv4 or both IPv6.
	Src, Dst netip.Addr
	// Protocol is the L4 protocol: TCP, UDP, ICMPv4, ICMPv6 or any other
	// number (then only the payload follows the IP header).
	Protocol         layers.IPProtocol
	SrcPort, DstPort uint16
	// Payload is the number of payload bytes after the L4 header.
	Payload int
	// IPv4Options go into the IPv4 header (padded to 4 bytes).
	IPv4Options []layers.IPv4Option
	// IPv4 fragment fields: FragOffset in 8-byte units, MoreFragments.
	// A non-zero FragOffset means no L4 header, only payload.
	FragOffset    uint16
	MoreFragments bool
	// IPv6Ext are extension headers before the L4 header. A fragment
	// header with a non-zero offset ends the chain: only payload follows.
	IPv6Ext []Ext
}

// Build serializes the frame described by s, with lengths (IPv4 total
// length and IHL, IPv6 payload length, UDP length, TCP data offset) filled
// in. Checksums are left zero: the XDP program does not check them.
// Errors: mismatched or invalid address families, bad extension lengths.
func Build(s Spec) ([]byte, error) {
	if !s.Src.IsValid() || !s.Dst.IsValid() || s.Src.Is4() != s.Dst.Is4() {
		return nil, fmt.Errorf("frames: addresses %v and %v are not of one family", s.Src, s.Dst)
	}
	srcMAC, dstMAC := s.SrcMAC, s.DstMAC
	if srcMAC == nil {
		srcMAC = DefaultSrcMAC
	}
	if dstMAC == nil {
		dstMAC = DefaultDstMAC
	}
	ipType := layers.EthernetTypeIPv4
	if s.Src.Is6() {
		ipType = layers.EthernetTypeIPv6
	}

	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: ipType}
	ls = append(ls, eth)
	next := &eth.EthernetType
	for i, tpid := range s.Tags {
		*next = tpid
		tag := &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: ipType}
		ls = append(ls, tag)
		next = &tag.Type
	}

	hasL4 := true
	if s.Src.Is4() {
		ip := &layers.IPv4{
			Version: 4, TTL: 64, Protocol: s.Protocol, Id: 1,
			SrcIP: s.Src.AsSlice(), DstIP: s.Dst.AsSlice(),
			Options: s.IPv4Options, FragOffset: s.FragOffset,
		}
		if s.MoreFragments {
			ip.Flags = layers.IPv4MoreFragments
		}
		hasL4 = s.FragOffset == 0
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: s.Protocol, SrcIP: s.Src.AsSlice(), DstIP: s.Dst.AsSlice()}
		ls = append(ls, ip)
		if len(s.IPv6Ext) > 0 {
			ext, l4, err := extChain(s.IPv6Ext, uint8(s.Protocol))
			if err != nil {
				return nil, err
			}
			ip.NextHeader = layers.IPProtocol(s.IPv6Ext[0].Type)
			ls = append(ls, gopacket.Payload(ext))
			hasL4 = l4
		}
	}

	if hasL4 {
		switch s.Protocol {
		case layers.IPProtocolTCP:
			ls = append(ls, &layers.TCP{SrcPort: layers.TCPPort(s.SrcPort), DstPort: layers.TCPPort(s.DstPort), Window: 1024, SYN: true})
		case layers.IPProtocolUDP:
			ls = append(ls, &layers.UDP{SrcPort: layers.UDPPort(s.SrcPort), DstPort: layers.UDPPort(s.DstPort)})
		case layers.IPProtocolICMPv4:
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1})
		case layers.IPProtocolICMPv6:
			ls = append(ls, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)},
				gopacket.Payload{0, 1, 0, 1}) // echo identifier and sequence
		}
	}
	ls = append(ls, gopacket.Payload(make([]byte, s.Payload)))

	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		return nil, fmt.Errorf("frames: serialize: %w", err)
	}
	return buf.Bytes(), nil
}

// MustBuild is Build for specs known to be valid; it panics on error.
func MustBuild(s Spec) []byte {
	b, err := Build(s)
	if err != nil {
		panic(err)
	}
	return b
}

// extChain encodes IPv6 extension headers (gopacket cannot serialize routing
// or fragment headers) chained to the final protocol. It reports whether an
// L4 header follows (false after a non-first fragment).
func extChain(exts []Ext, final uint8) ([]byte, bool, error) {
	var out []byte
	for i, e := range exts {
		next := final
		if i+1 < len(exts) {
			next = exts[i+1].Type
		}
		if e.Type == ExtFragment {
			h := make([]byte, 8)
			h[0] = next
			off := e.FragOffset << 3
			if e.More {
				off |= 1
			}
			binary.BigEndian.PutUint16(h[2:], off)
			binary.BigEndian.PutUint32(h[4:], 0x1234)
			out = append(out, h...)
			if e.FragOffset != 0 {
				if i+1 != len(exts) {
					return nil, false, fmt.Errorf("frames: headers after a non-first fragment")
				}
				return out, false, nil
			}
			continue
		}
		if e.Len < 8 || e.Len%8 != 0 || e.Len > 2048 {
			return nil, false, fmt.Errorf("frames: extension header length %d: want a multiple of 8 in 8..2048", e.Len)
		}
		h := make([]byte, e.Len)
		h[0] = next
		h[1] = uint8(e.Len/8 - 1)
		// PadN options (RFC 8200 section 4.2) fill the rest.
		for pos := 2; pos < e.Len; {
			n := min(e.Len-pos-2, 255)
			h[pos], h[pos+1] = 1, uint8(n)
			pos += 2 + n
		}
		out = append(out, h...)
	}
	return out, true, nil
}
