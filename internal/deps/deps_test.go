package deps

import _ "github.com/coder/coder/v2/vpn"
