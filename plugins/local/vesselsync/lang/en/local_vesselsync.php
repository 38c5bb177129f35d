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

/**
 * English strings of local_vesselsync.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'vessel-sync companion';
$string['privacy:metadata:applied'] = 'Progress that vessel-sync applied to this Moodle, with where and when the learner made it.';
$string['privacy:metadata:applied:actor'] = 'Who made the progress where it came from, as that system names them.';
$string['privacy:metadata:applied:cmid'] = 'The activity.';
$string['privacy:metadata:applied:source'] = 'The vessel or system the progress came from.';
$string['privacy:metadata:applied:timeapplied'] = 'When it was applied here.';
$string['privacy:metadata:applied:timeoriginal'] = 'When the learner made the progress.';
$string['privacy:metadata:applied:userid'] = 'The learner.';
$string['privacy:metadata:applied:value'] = 'The completion state or grade.';
$string['vesselsync:applyprogress'] = 'Apply learners\' activity completions and grades with their original time (vessel-sync)';
$string['vesselsync:lookup'] = 'Look up courses, learners and enrolments by key (vessel-sync)';
