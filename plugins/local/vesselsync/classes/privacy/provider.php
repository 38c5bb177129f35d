<?php
// This file is part of vessel-sync's companion plugin for Moodle - http://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <http://www.gnu.org/licenses/>.

namespace local_vesselsync\privacy;

use core_privacy\local\metadata\collection;
use core_privacy\local\request\approved_contextlist;
use core_privacy\local\request\approved_userlist;
use core_privacy\local\request\contextlist;
use core_privacy\local\request\transform;
use core_privacy\local\request\userlist;
use core_privacy\local\request\writer;

/**
 * Privacy provider of local_vesselsync: it keeps, per progress record it applied, the learner,
 * the activity, the value, the original time, where it came from and who applied it
 * (local_vesselsync_applied), in the activity's context. The completion and grade themselves
 * are Moodle's own and are exported and deleted by core.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements
        \core_privacy\local\metadata\provider,
        \core_privacy\local\request\plugin\provider,
        \core_privacy\local\request\core_userlist_provider {

    /**
     * What is stored.
     *
     * @param collection $items
     * @return collection
     */
    public static function get_metadata(collection $items): collection {
        $items->add_database_table('local_vesselsync_applied', [
            'userid' => 'privacy:metadata:applied:userid',
            'cmid' => 'privacy:metadata:applied:cmid',
            'value' => 'privacy:metadata:applied:value',
            'timeoriginal' => 'privacy:metadata:applied:timeoriginal',
            'source' => 'privacy:metadata:applied:source',
            'actor' => 'privacy:metadata:applied:actor',
            'timeapplied' => 'privacy:metadata:applied:timeapplied',
        ], 'privacy:metadata:applied');
        return $items;
    }

    /**
     * The activity contexts holding applied records of the user.
     *
     * @param int $userid
     * @return contextlist
     */
    public static function get_contexts_for_userid(int $userid): contextlist {
        $contextlist = new contextlist();
        $contextlist->add_from_sql(
            "SELECT ctx.id FROM {context} ctx
               JOIN {local_vesselsync_applied} a ON a.cmid = ctx.instanceid AND ctx.contextlevel = :level
              WHERE a.userid = :userid",
            ['level' => CONTEXT_MODULE, 'userid' => $userid]);
        return $contextlist;
    }

    /**
     * The users with applied records in a context.
     *
     * @param userlist $userlist
     */
    public static function get_users_in_context(userlist $userlist) {
        $context = $userlist->get_context();
        if (!$context instanceof \context_module) {
            return;
        }
        $userlist->add_from_sql('userid',
            "SELECT userid FROM {local_vesselsync_applied} WHERE cmid = :cmid",
            ['cmid' => $context->instanceid]);
    }

    /**
     * Exports the user's applied records, per activity.
     *
     * @param approved_contextlist $contextlist
     */
    public static function export_user_data(approved_contextlist $contextlist) {
        global $DB;
        $userid = $contextlist->get_user()->id;
        foreach ($contextlist->get_contexts() as $context) {
            if (!$context instanceof \context_module) {
                continue;
            }
            $rows = $DB->get_records('local_vesselsync_applied',
                ['userid' => $userid, 'cmid' => $context->instanceid], 'id');
            if (!$rows) {
                continue;
            }
            $data = array_map(fn($r) => (object) [
                'kind' => $r->kind,
                'value' => $r->value,
                'timeoriginal' => transform::datetime($r->timeoriginal),
                'source' => $r->source,
                'actor' => $r->actor,
                'timeapplied' => transform::datetime($r->timeapplied),
            ], array_values($rows));
            writer::with_context($context)->export_data(
                [get_string('pluginname', 'local_vesselsync')], (object) ['applied' => $data]);
        }
    }

    /**
     * Deletes every applied record of an activity.
     *
     * @param \context $context
     */
    public static function delete_data_for_all_users_in_context(\context $context) {
        global $DB;
        if ($context instanceof \context_module) {
            $DB->delete_records('local_vesselsync_applied', ['cmid' => $context->instanceid]);
        }
    }

    /**
     * Deletes the user's applied records in the approved contexts.
     *
     * @param approved_contextlist $contextlist
     */
    public static function delete_data_for_user(approved_contextlist $contextlist) {
        global $DB;
        $userid = $contextlist->get_user()->id;
        foreach ($contextlist->get_contexts() as $context) {
            if ($context instanceof \context_module) {
                $DB->delete_records('local_vesselsync_applied',
                    ['userid' => $userid, 'cmid' => $context->instanceid]);
            }
        }
    }

    /**
     * Deletes the applied records of the approved users in a context.
     *
     * @param approved_userlist $userlist
     */
    public static function delete_data_for_users(approved_userlist $userlist) {
        global $DB;
        $context = $userlist->get_context();
        if (!$context instanceof \context_module || !$userlist->get_userids()) {
            return;
        }
        [$insql, $params] = $DB->get_in_or_equal($userlist->get_userids(), SQL_PARAMS_NAMED);
        $params['cmid'] = $context->instanceid;
        $DB->delete_records_select('local_vesselsync_applied', "cmid = :cmid AND userid $insql", $params);
    }
}
