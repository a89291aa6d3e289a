# ---- helpers (templates/helpers.tcl: plain Tcl 8.5 -- Vivado's interpreter -- with no fields) ------

proc s2l_log {msg} { puts "skip2lora: $msg" }

proc s2l_step {msg} { puts "\n========== skip2lora: $msg ==========" }

# Vivado's version as a plain dotted number ("2023.2.1"), and the minimum check.
proc s2l_check_vivado {minimum} {
    set full [version -short]
    if {![regexp {^[0-9]+(\.[0-9]+)*} $full v]} { set v 0 }
    if {[package vcompare $v $minimum] < 0} {
        error "skip2lora: Vivado $full is too old; this flow needs $minimum or newer"
    }
    return $full
}

# The newest IP definition with one of these names (vendor xilinx.com), whatever its version.
# ``names`` are in order of preference, and an IP that IP integrator offers is preferred to one
# only ``get_ipdefs -all`` lists (hidden or superseded IP, such as xlconcat where Vivado ships the
# inline-HDL ilconcat): every name is tried in one scope before the next, wider scope.
proc s2l_ipdef {names} {
    foreach scope {ipi any all} {
        foreach name $names {
            set filter "NAME == $name && VENDOR == xilinx.com"
            if {$scope eq "ipi"} {
                set defs [get_ipdefs -quiet -filter "$filter && DESIGN_TOOL_CONTEXTS =~ *IPI*"]
            } elseif {$scope eq "any"} {
                set defs [get_ipdefs -quiet -filter $filter]
            } else {
                set defs [get_ipdefs -quiet -all -filter $filter]
            }
            set vlnvs {}
            foreach def $defs { lappend vlnvs [get_property VLNV $def] }
            if {[llength $vlnvs]} {
                set vlnv [lindex [lsort -dictionary $vlnvs] end]
                set ::S2L(ip,$name) $vlnv
                if {$scope eq "all"} { s2l_log "WARNING: $vlnv is hidden in the IP catalog; using it anyway" }
                return $vlnv
            }
        }
    }
    error "skip2lora: no IP named [join $names { or }] in the Vivado IP catalog"
}

# A block-design cell of a catalog IP: inline-HDL blocks (library inline_hdl, e.g. ilconcat) are
# created with -type inline_hdl, everything else with -type ip.
proc s2l_create_cell {vlnv name} {
    set type [expr {[lindex [split $vlnv :] 1] eq "inline_hdl" ? "inline_hdl" : "ip"}]
    return [create_bd_cell -type $type -vlnv $vlnv $name]
}

# The newest installed board part "vendor:board:component:<version>" for "vendor:board:component".
proc s2l_find_board_part {base} {
    set parts [get_board_parts -quiet -latest_file_version "${base}:*"]
    if {[llength $parts]} { return [lindex [lsort -dictionary $parts] end] }
    return ""
}

proc s2l_board_part {base} {
    set part [s2l_find_board_part $base]
    if {$part ne ""} { return $part }
    # Board files installed through the Vivado store (XilinxBoardStore) or named by the user.
    set paths {}
    if {[info exists ::env(SKIP2LORA_BOARD_REPO)]} { lappend paths $::env(SKIP2LORA_BOARD_REPO) }
    if {![catch {get_property LOCAL_ROOT_DIR [xhub::get_xstores xilinx_board_store]} store]} {
        lappend paths $store
    }
    if {[llength $paths]} {
        set_param board.repoPaths [concat [get_param board.repoPaths] $paths]
        set part [s2l_find_board_part $base]
        if {$part ne ""} { return $part }
    }
    # Last resort: install them from the board store (needs the network).
    s2l_log "board files for $base not found; trying to install them from the Vivado board store"
    set board [lindex [split $base :] 1]
    if {[catch {
        set store [xhub::get_xstores xilinx_board_store]
        xhub::refresh_catalog $store
        xhub::install [xhub::get_xitems -of_objects $store "*:${board}:*"]
        set_param board.repoPaths [concat [get_param board.repoPaths] [get_property LOCAL_ROOT_DIR $store]]
    } err]} {
        s2l_log "board store install failed: $err"
    }
    set part [s2l_find_board_part $base]
    if {$part ne ""} { return $part }
    error "skip2lora: no board part $base:* installed. Install the Kria KV260 board files \
(Vivado: Tools > Vivado Store > Boards > Kria KV260 Vision AI Starter Kit, or in Tcl: \
xhub::refresh_catalog \[xhub::get_xstores xilinx_board_store\]; \
xhub::install \[xhub::get_xitems *${board}*\]), or point SKIP2LORA_BOARD_REPO at a board file folder."
}

# The SOM240 connection to the KV260 carrier card. Optional: the design uses no carrier pins, but
# the connection makes the PS preset include the carrier's peripherals (UART, SD, USB, Ethernet).
proc s2l_carrier_connection {carrier} {
    if {$carrier eq ""} { return "" }
    set found {}
    catch {set found [get_board_parts -quiet -latest_file_version "${carrier}:*"]}
    if {![llength $found]} { catch {set found [get_boards -quiet "${carrier}:*"]} }
    if {![llength $found]} { return "" }
    set fields [split [lindex [lsort -dictionary $found] end] :]
    set vendor [lindex $fields 0]
    set board [lindex $fields 1]
    set version [lindex $fields end]
    return "som240_1_connector ${vendor}:${board}:som240_1_connector:${version}"
}

# CONFIG.<key> values of a block-design cell read back against the expected ones.
proc s2l_expect {cell pairs {when ""}} {
    foreach {key value} $pairs {
        set got [get_property CONFIG.$key $cell]
        if {$got ne $value && !([string is double -strict $got] && [string is double -strict $value] && $got == $value)} {
            error "skip2lora: $cell CONFIG.$key is '$got'$when, not '$value'"
        }
    }
}

# Set CONFIG.<key> values on a block-design cell and read every one of them back.
proc s2l_configure {cell pairs} {
    set dict {}
    foreach {key value} $pairs { lappend dict CONFIG.$key $value }
    set_property -dict $dict $cell
    s2l_expect $cell $pairs " after setting it"
}

# Parameters that IP integrator propagates from a connected interface (the AXI DMA's S2MM widths
# follow the stream connected to S_AXIS_S2MM) keep a value set by the script only once their
# VALUE_SRC is USER; set it before the values (as hls4ml's Zynq accelerator flows do).
proc s2l_user_values {cell keys} {
    set dict {}
    foreach key $keys { lappend dict CONFIG.$key.VALUE_SRC USER }
    set_property -dict $dict $cell
}

# A bus interface with explicit port maps and parameters (replaces whatever was inferred).
proc s2l_bus_interface {core name bus mode portmap params} {
    set abstraction [regsub {:([^:]+):([^:]+)$} $bus {:\1_rtl:\2}]
    set bi [ipx::add_bus_interface $name $core]
    set_property abstraction_type_vlnv $abstraction $bi
    set_property bus_type_vlnv $bus $bi
    set_property interface_mode $mode $bi
    foreach {logical physical} $portmap {
        set pm [ipx::add_port_map $logical $bi]
        set_property physical_name $physical $pm
    }
    foreach {key value} $params {
        set p [ipx::add_bus_parameter $key $bi]
        set_property value $value $p
    }
    return $bi
}

proc s2l_register {block name offset access description} {
    set reg [ipx::add_register $name $block]
    set_property address_offset $offset $reg
    set_property size 32 $reg
    set_property description $description $reg
    if {[catch {set_property access $access $reg} err]} { s2l_log "register $name: $err" }
    return $reg
}

proc s2l_field {reg name offset width access modified_write description} {
    set field [ipx::add_field $name $reg]
    set_property bit_offset $offset $field
    set_property bit_width $width $field
    set_property access $access $field
    set_property description $description $field
    if {$modified_write ne ""} {
        if {[catch {set_property modified_write_value $modified_write $field} err]} { s2l_log "field $name: $err" }
    }
    return $field
}

# The address segment of a slave interface pin (e.g. skip2lora_0/s_axi_control -> .../reg0).
proc s2l_slave_segments {cell intf} {
    set segs [get_bd_addr_segs -quiet "$cell/$intf/*"]
    if {![llength $segs]} { set segs [get_bd_addr_segs -quiet -of_objects [get_bd_intf_pins $cell/$intf]] }
    if {![llength $segs]} { error "skip2lora: $cell/$intf has no address segment" }
    return $segs
}

proc s2l_bytes {value} {
    if {[regexp {^([0-9]+)([KMG])$} $value -> n unit]} {
        return [expr {$n * [dict get {K 1024 M 1048576 G 1073741824} $unit]}]
    }
    return [expr {$value + 0}]
}

# A slave segment of the PS (e.g. zynq_ultra_ps_e_0/SAXIGP3/HP1_DDR_LOW): there once its port is enabled.
proc s2l_ps_segment {path} {
    set segs [get_bd_addr_segs -quiet $path]
    if {![llength $segs]} { error "skip2lora: no address segment $path (is its PS port enabled?)" }
    return $segs
}

# Read an assignment back from a master's address space (the hwh is checked again in Python):
# the segment SEG_<cell>_<block> (block "*": the cell's only one).
proc s2l_check_segment {space cell offset range {block *}} {
    set what [expr {$block eq "*" ? $cell : "$cell $block"}]
    foreach seg [get_bd_addr_segs -quiet -of_objects [get_bd_addr_spaces $space]] {
        if {[string match "*/SEG_${cell}_${block}" $seg]} {
            set got_offset [get_property OFFSET $seg]
            set got_range [s2l_bytes [get_property RANGE $seg]]
            if {$got_offset != $offset || $got_range != $range} {
                error "skip2lora: $what is mapped at $got_offset+$got_range in $space, not $offset+$range"
            }
            s2l_log "address: $what at $got_offset (range $got_range) in $space"
            return
        }
    }
    s2l_log "WARNING: could not read back the address segment of $what in $space (checked in the hwh later)"
}

# Exclude from a master's address space every segment of ``cell`` but SEG_<cell>_<block> for the
# blocks in ``keep`` (assign_bd_address without arguments maps every aperture a master can reach).
proc s2l_exclude_segments_but {space cell keep} {
    foreach seg [get_bd_addr_segs -quiet -of_objects [get_bd_addr_spaces $space]] {
        if {![string match "*/SEG_${cell}_*" $seg]} { continue }
        set wanted 0
        foreach block $keep { if {[string match "*/SEG_${cell}_${block}" $seg]} { set wanted 1 } }
        if {!$wanted} {
            # The master's segment (UG994's form); else the form write_bd_tcl writes since 2020.2:
            # the master's space and the slave's segment.
            if {[catch {exclude_bd_addr_seg $seg} err] && [catch {
                    exclude_bd_addr_seg -target_address_space [get_bd_addr_spaces $space] [get_bd_addr_segs -of_objects $seg]
                } err2]} {
                error "skip2lora: cannot exclude $seg from $space ($err; $err2)"
            }
            s2l_log "address: [file tail $seg] excluded from $space"
        }
    }
}

proc s2l_json_escape {s} { return [string map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t] $s] }

proc s2l_write_json {path pairs} {
    set fh [open $path w]
    puts $fh "\{"
    set items {}
    foreach {key value} $pairs { lappend items "  \"[s2l_json_escape $key]\": \"[s2l_json_escape $value]\"" }
    puts $fh [join $items ",\n"]
    puts $fh "\}"
    close $fh
}

proc s2l_run {run jobs args} {
    launch_runs $run -jobs $jobs {*}$args
    wait_on_run $run
    set progress [get_property PROGRESS [get_runs $run]]
    set status [get_property STATUS [get_runs $run]]
    s2l_log "$run: $status ($progress)"
    if {$progress ne "100%" || [string match -nocase "*error*" $status] || [string match -nocase "*failed*" $status]} {
        error "skip2lora: $run failed ($status); see [get_property DIRECTORY [get_runs $run]]/runme.log"
    }
}
