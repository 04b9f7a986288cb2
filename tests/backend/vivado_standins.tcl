# Stand-ins for the Vivado and Vitis/Vivado HLS Tcl commands the generated scripts call, for tclsh.
# Every call is recorded, one line per call, its words separated by tabs, in $env(VAQF_TCL_LOG).
# Queries answer from a small fake installation:
#   VAQF_FAKE_BOARD_PARTS  installed board parts (a Tcl list)
#   VAQF_FAKE_PL_HZ        the PL clock the PS reports after configuration (default: what was asked)
#   VAQF_FAKE_SLACK        worst setup slack after implementation (default 0.25)
#   VAQF_FAKE_COSIM        a command run by cosim_design with the -argv words appended
# Usage: tclsh vivado_standins.tcl SCRIPT
rename exit ::vaqf_real_exit
set ::log [open $::env(VAQF_TCL_LOG) w]
set ::pl_mhz ""

proc ::rec {name args} {
    puts $::log [join [concat [list $name] $args] "\t"]
    flush $::log
}
proc ::env_or {name default} {
    return [expr {[info exists ::env($name)] ? $::env($name) : $default}]
}

# commands whose answer does not matter
foreach cmd {create_project update_ip_catalog create_bd_design apply_bd_automation connect_bd_net
             connect_bd_intf_net assign_bd_address validate_bd_design save_bd_design make_wrapper
             update_compile_order wait_on_run open_run report_timing_summary report_utilization
             open_project set_top add_files open_solution set_part create_clock config_interface
             csim_design csynth_design export_design} {
    proc ::$cmd {args} "::rec $cmd {*}\$args; return {}"
}
# getters of named objects answer with the name
foreach cmd {get_bd_cells get_bd_pins get_bd_intf_pins get_bd_addr_spaces get_runs} {
    proc ::$cmd {args} "::rec $cmd {*}\$args; return \[lindex \$args end\]"
}
proc ::current_project {args} { ::rec current_project {*}$args; return vaqf_bd }
proc ::current_fileset {args} { ::rec current_fileset {*}$args; return sources_1 }
proc ::get_files {args} {
    ::rec get_files {*}$args
    return build/vivado/vaqf_bd.srcs/sources_1/bd/vaqf_bd/vaqf_bd.bd
}
proc ::get_timing_paths {args} { ::rec get_timing_paths {*}$args; return {path_0} }

proc ::get_board_parts {args} {
    ::rec get_board_parts {*}$args
    set out {}
    foreach p [::env_or VAQF_FAKE_BOARD_PARTS {}] {
        if {[string match [lindex $args end] $p]} { lappend out $p }
    }
    return $out
}
proc ::get_ipdefs {args} {
    ::rec get_ipdefs {*}$args
    set catalog {xilinx.com:ip:zynq_ultra_ps_e:3.3 xilinx.com:ip:zynq_ultra_ps_e:3.5
                 xilinx.com:ip:processing_system7:5.5 xilinx.com:ip:proc_sys_reset:5.0
                 xilinx.com:ip:smartconnect:1.0 xilinx.com:hls:vaqf_top:1.0}
    set out {}
    foreach d $catalog {
        if {[string match [lindex $args end] $d]} { lappend out $d }
    }
    return $out
}
proc ::create_bd_cell {args} {
    ::rec create_bd_cell {*}$args
    return [lindex $args end]
}
proc ::set_property {args} {
    ::rec set_property {*}$args
    if {[lindex $args 0] eq "-dict"} {
        foreach {k v} [lindex $args 1] {
            if {[string match *PL0_REF_CTRL__FREQMHZ $k] || [string match *FPGA0_PERIPHERAL_FREQMHZ $k]} {
                set ::pl_mhz $v
            }
        }
    }
    return {}
}
proc ::get_bd_addr_segs {args} {
    ::rec get_bd_addr_segs {*}$args
    set space [lindex $args end]
    if {[string match */Data $space]} { return [list $space/SEG_vaqf_top_0_Reg] }
    return [list $space/SEG_ps_DDR_LOW $space/SEG_ps_DDR_HIGH]
}
proc ::get_property {args} {
    ::rec get_property {*}$args
    switch -glob -- [lindex $args 0] {
        PROGRESS { return "100%" }
        CONFIG.FREQ_HZ { return [::env_or VAQF_FAKE_PL_HZ [expr {$::pl_mhz * 1000000.0}]] }
        DIRECTORY { return build/vivado/vaqf_bd.runs/[lindex $args 1] }
        SLACK { return [::env_or VAQF_FAKE_SLACK 0.25] }
        OFFSET { return 0x00A0000000 }
        RANGE { return 65536 }
    }
    return {}
}
# implementation to write_bitstream leaves a bitstream in the run folder and the hardware handoff
# where Vivado 2020.2+ writes it
proc ::launch_runs {args} {
    ::rec launch_runs {*}$args
    if {[lsearch -exact $args write_bitstream] >= 0} {
        file mkdir build/vivado/vaqf_bd.runs/impl_1 build/vivado/vaqf_bd.gen/sources_1/bd/vaqf_bd/hw_handoff
        set f [open build/vivado/vaqf_bd.runs/impl_1/vaqf_bd_wrapper.bit w]; puts -nonewline $f "fake bitstream"; close $f
        set f [open build/vivado/vaqf_bd.gen/sources_1/bd/vaqf_bd/hw_handoff/vaqf_bd.hwh w]; puts -nonewline $f "<fake hwh/>"; close $f
    }
    return {}
}
proc ::cosim_design {args} {
    ::rec cosim_design {*}$args
    set i [lsearch -exact $args -argv]
    if {$i >= 0 && [info exists ::env(VAQF_FAKE_COSIM)]} {
        exec {*}$::env(VAQF_FAKE_COSIM) {*}[lindex $args [expr {$i + 1}]]
    }
    return {}
}
proc ::exit {{code 0}} {
    ::rec exit $code
    close $::log
    ::vaqf_real_exit $code
}

source [lindex $argv 0]
::exit 0
