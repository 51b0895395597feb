package speaker

import (
	"slices"
	"strings"
	"testing"
)

func TestParseVersionList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []Version
		wantErr string
	}{
		{name: "single", in: "1.3", want: []Version{{1, 3}}},
		{name: "zero minor", in: "1.0", want: []Version{{1, 0}}},
		{name: "two majors", in: "1.9,2.0", want: []Version{{1, 9}, {2, 0}}},
		{name: "gap in majors", in: "1.2,3.4,7.0", want: []Version{{1, 2}, {3, 4}, {7, 0}}},
		{name: "max uint32", in: "4294967295.4294967295", want: []Version{{4294967295, 4294967295}}},
		{name: "empty", in: "", wantErr: "empty version list"},
		{name: "unsorted", in: "2.0,1.3", wantErr: "not in ascending order"},
		{name: "duplicate major", in: "1.2,1.3", wantErr: "major version 1 appears twice"},
		{name: "major zero", in: "0.9", wantErr: "major version 0"},
		{name: "major zero later", in: "1.0,0.1", wantErr: "major version 0"},
		{name: "trailing comma", in: "1.3,", wantErr: "entry 2"},
		{name: "leading comma", in: ",1.3", wantErr: "entry 1"},
		{name: "no dot", in: "13", wantErr: "not of the form major.minor"},
		{name: "three parts", in: "1.3.0", wantErr: "minor"},
		{name: "space", in: "1.3, 2.0", wantErr: "not a decimal number"},
		{name: "sign", in: "+1.3", wantErr: "not a decimal number"},
		{name: "negative", in: "1.-3", wantErr: "not a decimal number"},
		{name: "letters", in: "one.three", wantErr: "not a decimal number"},
		{name: "hex", in: "0x1.3", wantErr: "not a decimal number"},
		{name: "missing minor", in: "1.", wantErr: "missing number"},
		{name: "missing major", in: ".3", wantErr: "missing number"},
		{name: "overflow", in: "4294967296.0", wantErr: "out of range"},
		{name: "CR", in: "1.3\r", wantErr: "not a decimal number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseVersionList(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseVersionList(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseVersionList(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseVersionList(%q): %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ParseVersionList(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if s := formatVersionList(got); s != tt.in {
				t.Fatalf("formatVersionList round trip = %q, want %q", s, tt.in)
			}
		})
	}
}

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v, o Version
		want bool
	}{
		{Version{1, 3}, Version{1, 3}, true},
		{Version{1, 3}, Version{1, 2}, true},
		{Version{1, 2}, Version{1, 3}, false},
		{Version{2, 0}, Version{1, 9}, true},
		{Version{1, 9}, Version{2, 0}, false},
		{Version{1, 0}, Version{1, 0}, true},
	}
	for _, tt := range tests {
		if got := tt.v.AtLeast(tt.o); got != tt.want {
			t.Errorf("%v.AtLeast(%v) = %v, want %v", tt.v, tt.o, got, tt.want)
		}
	}
	if s := CurrentVersion.String(); s != "1.3" {
		t.Errorf("CurrentVersion = %q, want 1.3", s)
	}
}

func TestNegotiateVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		ours, theirs string
		want         Version
		wantErr      string
	}{
		{name: "peer older minor", ours: "1.3", theirs: "1.0", want: Version{1, 0}},
		{name: "we are older minor", ours: "1.0", theirs: "1.3", want: Version{1, 0}},
		{name: "same", ours: "1.3", theirs: "1.3", want: Version{1, 3}},
		{name: "peer offers newer major too", ours: "1.3", theirs: "1.9,2.0", want: Version{1, 3}},
		{name: "peer has higher minor on common major", ours: "1.9,2.0", theirs: "1.3", want: Version{1, 3}},
		{name: "highest common major wins", ours: "1.5,2.2,3.1", theirs: "1.9,2.7", want: Version{2, 2}},
		{name: "incompatible majors", ours: "1.3", theirs: "2.0", wantErr: "no common major version: we speak 1.3, peer speaks 2.0"},
		{name: "disjoint lists", ours: "1.3,3.0", theirs: "2.0,4.1", wantErr: "no common major"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ours, err := ParseVersionList(tt.ours)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := ParseVersionList(tt.theirs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := negotiateVersion(ours, theirs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("negotiate(%s, %s) = %v, %v; want error containing %q", tt.ours, tt.theirs, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("negotiate(%s, %s) = %v, %v; want %v", tt.ours, tt.theirs, got, err, tt.want)
			}
		})
	}
}
