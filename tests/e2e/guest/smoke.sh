# Kernel smoke scenario (sourced by scenario.sh with $PY and $GUEST set): proves the guest kernel
# does what hwpoisond relies on, and saves the raw kernel text. Writes $E2E_OUT/smoke.env
# (key=value facts), trace.txt (private tracefs instance), the event format files and dmesg.
set -eu
T=/sys/kernel/tracing/instances/e2e-smoke
mkdir "$T"
echo 1 > "$T/events/ras/memory_failure_event/enable"
echo 1 > "$T/events/mce/mce_record/enable"
cp /sys/kernel/tracing/events/ras/memory_failure_event/format "$E2E_OUT/memory_failure_event.format"
cp /sys/kernel/tracing/events/mce/mce_record/format "$E2E_OUT/mce_record.format"
facts="$E2E_OUT/smoke.env"
: > "$facts"
fact() { echo "$1=$2" >> "$facts"; }

soft_pfn=$($PY "$GUEST/pagetool.py" free-pfns 1)

# 1. soft_offline_page takes a physical address (drivers/base/memory.c, soft_offline_page_store).
fact hc_before_kb "$($PY "$GUEST/pagetool.py" hardware-corrupted-kb)"
fact soft_pfn "$soft_pfn"
if printf '0x%x\n' $((soft_pfn * 4096)) > /sys/devices/system/memory/soft_offline_page; then
    fact soft_write ok
else
    fact soft_write failed
fi
fact hc_after_soft_kb "$($PY "$GUEST/pagetool.py" hardware-corrupted-kb)"
fact soft_hwpoison "$($PY "$GUEST/pagetool.py" hwpoison "$soft_pfn")"

# 2. hwpoison-inject: corrupt-pfn runs memory_failure() on the pfn (mm/hwpoison-inject.c).
#    A page free at scan time may be some process's by now, and poisoning it would kill that
#    process: the filter makes the kernel skip the pfn unless it is still a free buddy page.
H=/sys/kernel/debug/hwpoison
echo 1 > $H/corrupt-filter-enable
echo $((1 << 10)) > $H/corrupt-filter-flags-mask   # KPF_BUDDY
echo $((1 << 10)) > $H/corrupt-filter-flags-value
corrupt_pfn=$($PY "$GUEST/pagetool.py" free-pfns 1)
fact corrupt_pfn "$corrupt_pfn"
printf '%d\n' "$corrupt_pfn" > $H/corrupt-pfn
# The filter is global and soft_offline_page() obeys it too (EOPNOTSUPP for filtered pages).
echo 0 > $H/corrupt-filter-enable
fact corrupt_hwpoison "$($PY "$GUEST/pagetool.py" hwpoison "$corrupt_pfn")"
fact hc_after_corrupt_kb "$($PY "$GUEST/pagetool.py" hardware-corrupted-kb)"

# 3. mce-inject, software injection through the real handler (Documentation/x86 and
#    arch/x86/kernel/cpu/mce/inject.c): a corrected memory-controller read error, bank 7,
#    ADDRV|MISCV|EN|VAL; misc 0x86 = address LSB 6, physical address mode.
M=/sys/kernel/debug/mce-inject
echo sw > $M/flags
echo 0x9c0000000008009f > $M/status
echo 0x7654000 > $M/addr
echo 0x86 > $M/misc
echo 0 > $M/cpu
echo 7 > $M/bank
fact mce_injected 1
sleep 1

cp "$T/trace" "$E2E_OUT/trace.txt"
dmesg > "$E2E_OUT/smoke-dmesg.txt"
echo 0 > "$T/tracing_on"
rmdir "$T"
