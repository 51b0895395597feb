/*
 * mach/mach_vm.h for the Linux cross build of the darwin artefacts (see
 * scripts/darwin/cc). Zig ships no copy of this MIG-generated SDK header,
 * and github.com/prometheus/client_golang (a dependency of the coder module)
 * includes it in its darwin cgo file for one routine, mach_vm_region. The
 * routine is in libSystem (libsystem_kernel); this declares it with the SDK's
 * signature and nothing else. The compiler searches this directory after its
 * own (-idirafter), so a toolchain that has the real header uses that one.
 */
#ifndef CODERVPN_SHIM_MACH_MACH_VM_H
#define CODERVPN_SHIM_MACH_MACH_VM_H

#include <mach/mach_types.h>

extern kern_return_t mach_vm_region(
	vm_map_read_t target_task,
	mach_vm_address_t *address,
	mach_vm_size_t *size,
	vm_region_flavor_t flavor,
	vm_region_info_t info,
	mach_msg_type_number_t *infoCnt,
	mach_port_t *object_name);

#endif
