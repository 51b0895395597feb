// Package darwincheck reads the macOS artefacts that are built on Linux
// (scripts/build-darwin.sh) and says what is wrong with them: none of them
// can be loaded here, so what a Mac would refuse or misread (a missing
// slice, a framework macOS 12 lacks, a stray export, a stale signature, an
// Info.plist without the version) is found by reading the files. The rules
// are in rules.go; TestArtefacts applies them to build/darwin when `make
// check-darwin` points it there.
package darwincheck

import (
	"bytes"
	"debug/macho"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// Load command numbers debug/macho does not name.
const (
	lcIDDylib          = 0xd
	lcLoadWeakDylib    = 0x80000018
	lcReexportDylib    = 0x8000001f
	lcLazyLoadDylib    = 0x20
	lcLoadUpwardDylib  = 0x80000023
	lcCodeSignature    = 0x1d
	lcDyldInfo         = 0x22
	lcDyldInfoOnly     = 0x80000022
	lcDyldExportsTrie  = 0x80000033
	lcBuildVersion     = 0x32
	lcVersionMinMacOSX = 0x24
	platformMacOS      = 1
)

// Slice is what the checks need from one architecture of a Mach-O file.
type Slice struct {
	Cpu  macho.Cpu
	Type macho.Type
	// MinOS and Platform come from LC_BUILD_VERSION; HasBuildVersion is
	// false without one.
	HasBuildVersion bool
	Platform        uint32
	MinOS           Version
	// HasVersionMin is true when an old LC_VERSION_MIN_MACOSX is present.
	HasVersionMin bool
	// InstallName is the LC_ID_DYLIB name of a library.
	InstallName string
	// Libraries are the install names of every library it loads, whatever
	// the load command (plain, weak, re-export, lazy, upward).
	Libraries []string
	// Exports are what dyld can find in it: the export trie.
	Exports []Export
	// LocalSymbols counts defined symbols that are not external: a
	// stripped file has none.
	LocalSymbols int
	// HasDWARF is true when a __DWARF segment or a debug section is left.
	HasDWARF bool
	// InfoPlist is the __TEXT,__info_plist section; nil without one.
	InfoPlist []byte
	// Signature is the state of the embedded code signature.
	Signature SignatureState
}

// Version is a Mach-O X.Y.Z version (nibbles xxxx.yy.zz).
type Version uint32

func (v Version) String() string {
	if v&0xff == 0 {
		return fmt.Sprintf("%d.%d", v>>16, (v>>8)&0xff)
	}
	return fmt.Sprintf("%d.%d.%d", v>>16, (v>>8)&0xff, v&0xff)
}

// ReadFile reads a thin or universal Mach-O file into its slices.
func ReadFile(path string) (slices []*Slice, universal bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	return Read(data)
}

// Read is ReadFile on bytes.
func Read(data []byte) (slices []*Slice, universal bool, err error) {
	fat, err := macho.NewFatFile(bytes.NewReader(data))
	switch {
	case err == nil:
		defer fat.Close()
		for _, a := range fat.Arches {
			end := uint64(a.Offset) + uint64(a.Size)
			if end > uint64(len(data)) {
				return nil, true, fmt.Errorf("the %s slice runs past the end of the file", a.Cpu)
			}
			s, err := readSlice(data[a.Offset:end])
			if err != nil {
				return nil, true, fmt.Errorf("the %s slice: %w", a.Cpu, err)
			}
			slices = append(slices, s)
		}
		return slices, true, nil
	case errors.Is(err, macho.ErrNotFat):
		s, err := readSlice(data)
		if err != nil {
			return nil, false, err
		}
		return []*Slice{s}, false, nil
	default:
		return nil, false, err
	}
}

func readSlice(data []byte) (*Slice, error) {
	f, err := macho.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &Slice{Cpu: f.Cpu, Type: f.Type}
	bo := f.ByteOrder
	var exportOff, exportSize, sigOff, sigSize uint32
	for _, l := range f.Loads {
		raw := l.Raw()
		if len(raw) < 8 {
			return nil, errors.New("a load command shorter than its header")
		}
		switch cmd := bo.Uint32(raw); cmd {
		case uint32(macho.LoadCmdDylib), lcLoadWeakDylib, lcReexportDylib, lcLazyLoadDylib, lcLoadUpwardDylib:
			name, err := dylibName(raw, bo)
			if err != nil {
				return nil, err
			}
			s.Libraries = append(s.Libraries, name)
		case lcIDDylib:
			if s.InstallName, err = dylibName(raw, bo); err != nil {
				return nil, err
			}
		case lcBuildVersion:
			if len(raw) < 16 {
				return nil, errors.New("a short LC_BUILD_VERSION")
			}
			s.HasBuildVersion = true
			s.Platform = bo.Uint32(raw[8:])
			s.MinOS = Version(bo.Uint32(raw[12:]))
		case lcVersionMinMacOSX:
			s.HasVersionMin = true
		case lcDyldInfo, lcDyldInfoOnly:
			if len(raw) < 48 {
				return nil, errors.New("a short LC_DYLD_INFO")
			}
			exportOff, exportSize = bo.Uint32(raw[40:]), bo.Uint32(raw[44:])
		case lcDyldExportsTrie:
			if len(raw) < 16 {
				return nil, errors.New("a short LC_DYLD_EXPORTS_TRIE")
			}
			exportOff, exportSize = bo.Uint32(raw[8:]), bo.Uint32(raw[12:])
		case lcCodeSignature:
			if len(raw) < 16 {
				return nil, errors.New("a short LC_CODE_SIGNATURE")
			}
			sigOff, sigSize = bo.Uint32(raw[8:]), bo.Uint32(raw[12:])
		}
	}
	if exportSize > 0 {
		trie, err := within(data, exportOff, exportSize, "export trie")
		if err != nil {
			return nil, err
		}
		if s.Exports, err = parseExportTrie(trie); err != nil {
			return nil, fmt.Errorf("export trie: %w", err)
		}
	}
	if sigSize > 0 {
		blob, err := within(data, sigOff, sigSize, "code signature")
		if err != nil {
			return nil, err
		}
		s.Signature = checkSignature(data, sigOff, blob)
	}
	if f.Symtab != nil {
		for _, sym := range f.Symtab.Syms {
			// N_STAB entries are debug notes; N_EXT marks external symbols;
			// N_TYPE==N_UNDF (0) is an import.
			if sym.Type&0xe0 != 0 {
				s.HasDWARF = true
			} else if sym.Type&0x01 == 0 && sym.Type&0x0e != 0 {
				s.LocalSymbols++
			}
		}
	}
	for _, sec := range f.Sections {
		if sec.Seg == "__DWARF" {
			s.HasDWARF = true
		}
		if sec.Seg == "__TEXT" && sec.Name == "__info_plist" {
			if s.InfoPlist, err = sec.Data(); err != nil {
				return nil, fmt.Errorf("read __TEXT,__info_plist: %w", err)
			}
		}
	}
	return s, nil
}

// dylibName reads the name of a dylib_command (its offset is at byte 8).
func dylibName(raw []byte, bo binary.ByteOrder) (string, error) {
	if len(raw) < 24 {
		return "", errors.New("a short dylib load command")
	}
	off := bo.Uint32(raw[8:])
	if off >= uint32(len(raw)) {
		return "", errors.New("a dylib load command whose name lies outside it")
	}
	name := raw[off:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), nil
}

func within(data []byte, off, size uint32, what string) ([]byte, error) {
	end := uint64(off) + uint64(size)
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("the %s runs past the end of the file", what)
	}
	return data[off:end], nil
}
