package darwincheck

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// parsePlistStrings reads an XML property list whose top level is a dict
// and returns its string values by key. It is no general plist parser:
// the library's Info.plist holds only strings, and anything that is not
// well-formed XML with a <plist><dict> is an error, as it would be to
// CFBundle on the Mac.
func parsePlistStrings(data []byte) (map[string]string, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	// Apple's DOCTYPE names a DTD the decoder need not fetch.
	d.Strict = true
	out := make(map[string]string)
	var path []string
	var key, text string
	haveKey := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not well-formed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			path = append(path, t.Name.Local)
			text = ""
		case xml.CharData:
			text += string(t)
		case xml.EndElement:
			if len(path) == 3 && path[0] == "plist" && path[1] == "dict" {
				switch t.Name.Local {
				case "key":
					key, haveKey = text, true
				case "string":
					if !haveKey {
						return nil, errors.New("a <string> in the dict without its <key>")
					}
					out[key] = text
					haveKey = false
				default:
					haveKey = false
				}
			}
			path = path[:len(path)-1]
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no <plist><dict> with string values")
	}
	return out, nil
}
